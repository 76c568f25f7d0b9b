"""Learnability filters: reward squashing, K-means cold start, EE-Net bandit.

The allocation problem is a contextual bandit: each public sample is an arm
with context ``x`` (embedding ⊕ learnability statistics) and the reward is the
receiver's learning gain on it. One :class:`NeuralBanditFilter` per
(receiver, sender) pair learns that reward from history and trades
exploitation against exploration (EE-Net: an exploitation net ``f1`` plus an
exploration net ``f2`` that predicts the error of ``f1``).

Pure numpy / PyTorch; no I/O. All randomness is seeded per call or per filter,
so a run is reproducible and no global RNG or thread setting is touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch
from lada.common.config import FilterConfig
from torch import nn
from torch.optim.adam import adam as _adam_step

_EPS = 1e-8
_BATCH = 32  # minibatch size of filter retraining
_KMEANS_ITERS = 20


# ---------------------------------------------------------------- rewards
def squash_reward(nll_before: float | np.ndarray, nll_after: float | np.ndarray, scale: float) -> float | np.ndarray:
    """Learning gain of a receiver, squashed to [0, 1].

    ``d = (before - after) / max(before, eps)`` is the relative NLL drop (the
    same as a relative log-perplexity drop, so it is comparable across models
    and samples of different difficulty), and ``r = sigmoid(scale * d)``:
    0.5 means no change, > 0.5 the receiver learned, < 0.5 it got worse.
    Scalars in -> float out; arrays in -> array out.
    """
    b = np.asarray(nll_before, dtype=np.float64)
    a = np.asarray(nll_after, dtype=np.float64)
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(a))):
        raise ValueError("squash_reward: NLL values must be finite")
    d = (b - a) / np.maximum(b, _EPS)
    r = 0.5 * (1.0 + np.tanh(0.5 * scale * d))  # == sigmoid(scale*d), overflow-free
    if r.ndim == 0:
        return float(r)
    return r


# ---------------------------------------------------------------- cold start
def _sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (len(x), len(c))."""
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: next centre drawn with probability ∝ D(x)², spreading centres out."""
    n = len(x)
    chosen = [int(rng.integers(n))]
    d2 = _sqdist(x, x[chosen])[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0.0:  # all remaining points duplicate a centre: pick any unused one
            free = np.setdiff1d(np.arange(n), chosen)
            nxt = int(rng.choice(free))
        else:
            nxt = int(rng.choice(n, p=d2 / total))
        chosen.append(nxt)
        d2 = np.minimum(d2, _sqdist(x, x[nxt : nxt + 1])[:, 0])
    return x[chosen].copy()


def kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K-means on standardised columns: (label per row, centroids in standardised space).

    Columns are standardised (``z = (x - mean) / std``) so no column dominates the distance;
    k-means++ init, then Lloyd iterations ``c_j = mean{x : argmin_l ||x - c_l|| = j}`` (an empty
    cluster keeps its centre). Deterministic for ``seed``; needs ``1 <= k <= len(x)``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"contexts must be 2-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("contexts must be finite")
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in [1, {len(x)}], got {k}")
    std = x.std(0)
    x = (x - x.mean(0)) / np.where(std > _EPS, std, 1.0)
    rng = np.random.default_rng(seed)
    c = _kmeans_pp(x, k, rng)
    for _ in range(_KMEANS_ITERS):
        labels = _sqdist(x, c).argmin(1)
        new = c.copy()
        for j in range(k):
            members = labels == j
            if members.any():
                new[j] = x[members].mean(0)
        if np.allclose(new, c):
            break
        c = new
    return _sqdist(x, c).argmin(1), c


def kmeans_cold_start(contexts: np.ndarray, k: int, seed: int) -> list[int]:
    """Round-1 allocation without reward history: k samples spread over the context space.

    :func:`kmeans` finds k clusters of the standardised contexts, and for each centroid the
    nearest sample not yet taken is returned. The result is exactly ``min(k, n)`` distinct
    indices; deterministic for ``seed``.
    """
    x = np.asarray(contexts, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"contexts must be 2-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("contexts must be finite")
    n = len(x)
    if k <= 0:
        return []
    if k >= n:
        return list(range(n))
    _, c = kmeans(x, k, seed)
    std = x.std(0)
    z = (x - x.mean(0)) / np.where(std > _EPS, std, 1.0)
    order = np.argsort(_sqdist(z, c), axis=0, kind="stable")  # (n, k): samples by distance per centroid
    used = np.zeros(n, dtype=bool)
    out: list[int] = []
    for j in range(k):
        for i in order[:, j]:
            if not used[i]:
                used[i] = True
                out.append(int(i))
                break
    return out


# ---------------------------------------------------------------- bandit filter
def _mlp(d_in: int, hidden: int, gen: torch.Generator) -> nn.Sequential:
    """``Linear(d_in, hidden) -> ReLU -> Linear(hidden, 1)``, initialised from ``gen``
    (PyTorch's default scheme, but without the global RNG)."""
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=gen)
            bound = 1.0 / math.sqrt(layer.weight.shape[1])
            nn.init.uniform_(layer.bias, -bound, bound, generator=gen)
    return net


class _Adam:
    """Adam: ``m ← β1·m + (1-β1)·g``, ``v ← β2·v + (1-β2)·g²``,
    ``θ ← θ - lr·m̂ / (√v̂ + ε)`` with bias-corrected ``m̂ = m/(1-β1ᵗ)``, ``v̂ = v/(1-β2ᵗ)``.

    Why not ``torch.optim.Adam``: torch's vectorised ``sqrt`` fans out over the
    intra-op thread pool above 2048 elements, and when the cores are busy (the
    SLM trains next door) every step then waits milliseconds for a descheduled
    worker — 25x slower. On a few thousand floats numpy stays single-threaded
    and takes microseconds; it writes the tensors' shared memory in place.
    """

    def __init__(self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)):
        self.params = params
        self.lr = lr
        self.b1, self.b2 = betas
        self.eps = 1e-8
        self.m = [np.zeros(tuple(p.shape), dtype=np.float32) for p in params]
        self.v = [np.zeros(tuple(p.shape), dtype=np.float32) for p in params]
        self.t = 0

    def step(self) -> None:
        self.t += 1
        step = self.lr / (1.0 - self.b1**self.t)
        c2 = 1.0 / (1.0 - self.b2**self.t)
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            g = p.grad.detach().numpy()
            w = p.detach().numpy()  # shares memory with the parameter
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            w -= step * m / (np.sqrt(v * c2) + self.eps)


def exploration_dim(context_dim: int, cfg: FilterConfig) -> int:
    """Width of f2's input: every parameter of f1 (``"grad"``) or f1's hidden layer (``"hidden"``)."""
    h = cfg.hidden
    return context_dim * h + 2 * h + 1 if cfg.exploration_input == "grad" else h


class NeuralBanditFilter:
    """EE-Net (Ban et al., ICLR 2022) as published, for one (receiver, sender) pair or a shared one.

    - exploitation ``f1(x) = sigmoid(w2ᵀ h + b2)``, ``h = relu(W1 z + b1)``, ``z`` the standardised
      context: predicts the reward ``r`` in [0, 1] (a sigmoid because the reward lives there);
    - exploration ``f2(φ(x))``, a plain MLP with an unbounded output: predicts ``r - f1(x)``, the
      error f1 made on x. Its input ``φ(x)`` is f1's gradient w.r.t. all its parameters, in closed
      form ``∂f1/∂b2 = s``, ``∂f1/∂w2 = s·h``, ``∂f1/∂b1 = s·w2⊙1[a>0]``,
      ``∂f1/∂W1 = (s·w2⊙1[a>0]) zᵀ`` with ``s = f1(1 - f1)``, divided by its L2 norm (as the
      authors' code does, so f2 sees the direction in which f1 would move, not its scale);
      ``exploration_input="hidden"`` uses f1's normalised hidden activations instead;
    - ``score(x) = f1(x) + λ·f2(φ(x))``. λ = 1 is EE-Net's own score: f2 estimates the part of the
      reward f1 misses, so f1 + f2 is the whole estimate; any other λ rescales that correction by
      a number the published method does not have (``lam=0`` is the no-exploration ablation).

    The label of f2 is the residual *at choice time*: :meth:`parts` returns f1's prediction and φ
    as they are when a sample is picked, and :meth:`update` takes them back with the reward, so
    f2 learns where the f1 that made a choice was wrong (not a second regression of a refit f1).
    Both nets are retrained (warm-started) on the whole history for ``cfg.epochs`` epochs before
    the next scoring after an ``update``.
    Contexts are standardised with mean/std of the history and the latest candidate pool, refit
    at every update. A per-filter ``torch.Generator`` drives init and shuffling, so the filter is
    deterministic for its seed and its state round-trips exactly.
    """

    def __init__(self, context_dim: int, cfg: FilterConfig, seed: int) -> None:
        if context_dim < 1:
            raise ValueError("context_dim must be >= 1")
        self.context_dim = context_dim
        self.cfg = cfg
        self.feat_dim = exploration_dim(context_dim, cfg)
        self._gen = torch.Generator().manual_seed(int(seed))
        self.f1 = _mlp(context_dim, cfg.hidden, self._gen)
        self.f2 = _mlp(self.feat_dim, cfg.hidden, self._gen)
        self.hist_x = torch.zeros(0, context_dim)
        self.hist_r = torch.zeros(0)
        self.hist_p = torch.zeros(0)  # f1(x) when x was chosen
        self.hist_phi = torch.zeros(0, self.feat_dim)  # φ(x) when x was chosen
        self.x_mean = torch.zeros(context_dim)
        self.x_std = torch.ones(context_dim)
        self.stale = False  # rewards arrived since the nets were last trained

    # ------------------------------------------------------------ forward
    @property
    def has_history(self) -> bool:
        """True once any reward has been observed (before that, use a cold start)."""
        return len(self.hist_r) > 0

    def _to_tensor(self, contexts: np.ndarray) -> torch.Tensor:
        x = np.asarray(contexts, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.context_dim:
            raise ValueError(f"contexts must have shape (n, {self.context_dim}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("contexts must be finite")
        return torch.from_numpy(x.copy())

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def _f1(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f1 in [0, 1], pre-activation a, hidden h = relu(a)) for standardised z."""
        a = self.f1[0](z)
        h = torch.relu(a)
        return torch.sigmoid(self.f1[2](h)).squeeze(-1), a, h

    def _features(self, z: torch.Tensor, p: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """φ: f1's normalised gradient w.r.t. (W1, b1, w2, b2), or its normalised hidden layer."""
        with torch.no_grad():
            if self.cfg.exploration_input == "grad":
                s = (p * (1.0 - p)).unsqueeze(-1)
                d = s * self.f1[2].weight.reshape(1, -1) * (a > 0).float()  # ∂f1/∂b1, (n, hidden)
                g = torch.cat([(d.unsqueeze(2) * z.unsqueeze(1)).reshape(len(z), -1), d, s * h, s], dim=1)
            else:
                g = h
            return g / g.norm(dim=1, keepdim=True).clamp_min(_EPS)

    def parts(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score ``f1 + λ·f2``, f1, φ) per context row, as the filter is now: what a policy
        keeps of the samples it picks, to hand back to :meth:`update` with their rewards."""
        x = self._to_tensor(contexts)
        if self.stale:
            self._retrain()
        with torch.no_grad():
            z = self._standardize(x)
            p, a, h = self._f1(z)
            phi = self._features(z, p, a, h)
            s = p + self.cfg.lam * self.f2(phi).squeeze(-1) if self.cfg.lam > 0 else p
        return s.double().numpy(), p.numpy().astype(np.float32), phi.numpy()

    def score(self, contexts: np.ndarray) -> np.ndarray:
        """``f1(x) + λ·f2(φ(x))`` per context row (float64, shape (n,))."""
        return self.parts(contexts)[0]

    # ------------------------------------------------------------ learning
    def _fit(self, net_loss: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter], n: int) -> None:
        """``cfg.epochs`` passes of Adam over shuffled minibatches of the history."""
        opt = _Adam(params, lr=self.cfg.lr)
        for _ in range(self.cfg.epochs):
            perm = torch.randperm(n, generator=self._gen)
            for i in range(0, n, _BATCH):
                idx = perm[i : i + _BATCH]
                for p in params:
                    p.grad = None
                net_loss(idx).backward()
                opt.step()

    def update(self, contexts: np.ndarray, rewards: np.ndarray | list[float], f1_at_choice: np.ndarray | None = None,
               phi_at_choice: np.ndarray | None = None, pool: np.ndarray | None = None) -> None:
        """Add (context, reward) observations; the nets retrain on the whole history (f1 on
        ``(x, r)``, f2 on ``(φ_chosen, r - f1_chosen)``) before the filter scores again.

        ``f1_at_choice``/``phi_at_choice`` are what :meth:`parts` gave when the samples were picked
        (EE-Net's label); without them they are taken from the filter as it is now, which is the
        same thing only if nothing was learned since the pick. ``pool`` (the round's candidate
        contexts) joins the history in the standardisation, so a feature the history has not yet
        varied (a cluster never picked) keeps the scale the candidates give it.
        """
        x = self._to_tensor(contexts)
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float32).reshape(-1))
        if len(r) != len(x):
            raise ValueError(f"{len(x)} contexts but {len(r)} rewards")
        if not torch.isfinite(r).all():
            raise ValueError("rewards must be finite")
        if (f1_at_choice is None) != (phi_at_choice is None):
            raise ValueError("f1_at_choice and phi_at_choice go together")
        if len(x) == 0:
            return
        if f1_at_choice is None:
            _, p_now, phi_now = self.parts(contexts)
            f1_at_choice, phi_at_choice = p_now, phi_now
        p0 = torch.as_tensor(np.asarray(f1_at_choice, dtype=np.float32).reshape(-1))
        phi0 = torch.as_tensor(np.asarray(phi_at_choice, dtype=np.float32))
        if len(p0) != len(x) or tuple(phi0.shape) != (len(x), self.feat_dim):
            raise ValueError(f"choice-time predictions must be ({len(x)},) and ({len(x)}, {self.feat_dim}), "
                             f"got {tuple(p0.shape)} and {tuple(phi0.shape)}")
        self.hist_x = torch.cat([self.hist_x, x])
        self.hist_r = torch.cat([self.hist_r, r])
        self.hist_p = torch.cat([self.hist_p, p0])
        self.hist_phi = torch.cat([self.hist_phi, phi0])
        ref = self.hist_x if pool is None else torch.cat([self.hist_x, self._to_tensor(pool)])
        self.x_mean = ref.mean(0)
        std = ref.std(0, unbiased=False) if len(ref) > 1 else torch.ones(self.context_dim)
        self.x_std = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.stale = True

    def _retrain(self) -> None:
        """Retrain f1 on ``(x, r)``, then f2 on ``(φ_chosen, r - f1_chosen)``, over the whole history.
        Deferred from :meth:`update` to the next scoring, so a filter that several pairs feed in a
        round (``filter.share``) is retrained once on all of their rewards, not once per pair. The
        server does not wait for that: :func:`retrain_all` retrains every pair's stale filter in one
        stacked computation before the round's first allocation, to the same result."""
        self.stale = False
        n = len(self.hist_r)
        z = self._standardize(self.hist_x)
        y = self.hist_r

        def f1_loss(idx: torch.Tensor) -> torch.Tensor:
            return torch.mean((self._f1(z[idx])[0] - y[idx]) ** 2)

        self._fit(f1_loss, list(self.f1.parameters()), n)
        resid = self.hist_r - self.hist_p
        feats = self.hist_phi

        def f2_loss(idx: torch.Tensor) -> torch.Tensor:
            return torch.mean((self.f2(feats[idx]).squeeze(-1) - resid[idx]) ** 2)

        self._fit(f2_loss, list(self.f2.parameters()), n)

    def _retrain_plan(self) -> dict[str, object]:
        """What :meth:`_retrain` trains on, for :func:`retrain_all`: f1's inputs and targets, f2's,
        and each net's minibatch sequence, drawn from this filter's generator in :meth:`_retrain`'s
        order (f1's epochs, then f2's). Clears ``stale``, as :meth:`_retrain` does."""
        self.stale = False
        n = len(self.hist_r)
        f1_perms = [torch.randperm(n, generator=self._gen) for _ in range(self.cfg.epochs)]
        f2_perms = [torch.randperm(n, generator=self._gen) for _ in range(self.cfg.epochs)]
        return {"z": self._standardize(self.hist_x), "y": self.hist_r, "b1": f1_perms,
                "phi": self.hist_phi, "resid": self.hist_r - self.hist_p, "b2": f2_perms}

    # ------------------------------------------------------------ state
    _HIST = ("hist_x", "hist_r", "hist_p", "hist_phi", "x_mean", "x_std")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume (weights, history, input stats, RNG), as
        contiguous standalone tensors, so ``safetensors.torch.save_file`` works."""
        out: dict[str, torch.Tensor] = {}
        for name, net in (("f1", self.f1), ("f2", self.f2)):
            for k, v in net.state_dict().items():
                out[f"{name}.{k}"] = v.detach().clone().contiguous()
        for k in self._HIST:
            out[k] = getattr(self, k).clone().contiguous()
        out["rng_state"] = self._gen.get_state().clone()
        out["stale"] = torch.tensor([int(self.stale)])
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_dict` (shapes must match this filter's config)."""
        shapes = {"hist_x": (-1, self.context_dim), "hist_phi": (-1, self.feat_dim)}
        for k, shape in shapes.items():
            t = torch.as_tensor(state[k], dtype=torch.float32)
            if t.ndim != 2 or t.shape[1] != shape[1]:
                raise ValueError(f"{k} has shape {tuple(t.shape)}, this filter expects (n, {shape[1]})")
        for name, net in (("f1", self.f1), ("f2", self.f2)):
            prefix = f"{name}."
            net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        for k in self._HIST:
            setattr(self, k, torch.as_tensor(state[k], dtype=torch.float32).clone())
        self._gen.set_state(torch.as_tensor(state["rng_state"], dtype=torch.uint8).clone())
        self.stale = bool(int(state["stale"][0])) if "stale" in state else False


# ---------------------------------------------------------------- batched retraining
_GROUP = 16  # filters per stack in retrain_all (8-16 fastest for 200 f2 stacks on this machine: cache)


def _n_steps(perms: list[torch.Tensor]) -> int:
    """Minibatches :meth:`NeuralBanditFilter._fit` takes over these epoch permutations: each
    epoch's permutation cut into ``_BATCH``-row slices (the last of an epoch may be shorter)."""
    return sum(-(-len(p) // _BATCH) for p in perms)


def _fit_stacked(nets: list[nn.Sequential], xs: list[torch.Tensor], ys: list[torch.Tensor],
                 perms: list[list[torch.Tensor]], lr: float, sigmoid: bool,
                 scratch: dict[str, torch.Tensor] | None = None) -> None:
    """Train ``Linear -> ReLU -> Linear`` nets of one shape together, as one stacked computation.

    Net ``i`` is fitted to ``(xs[i], ys[i])`` with ``perms[i]`` (one permutation of its rows per epoch,
    cut into ``_BATCH``-row minibatches, the last of an epoch possibly shorter) and the
    loss ``mean_b (out_i(x_b) - y_b)²`` (``out = sigmoid(..)`` when ``sigmoid``), one Adam step per
    minibatch (lr, β = (0.9, 0.999), ε = 1e-8): what :meth:`NeuralBanditFilter._fit` does net by
    net. The parameters are stacked on a leading axis of length P; the forward and backward passes
    are batched matmuls with the gradients in closed form (the P losses summed, so each net gets
    only its own); the minibatches are padded to the longest one and masked; a net whose sequence
    is shorter stops taking steps when it ends, so its Adam step count stays its own. The nets must
    come sorted by their number of minibatches, longest first: the nets still training at a step
    are then a prefix of the stack.

    Adam is torch's fused kernel over the stacked tensors (one pass per step, where
    :class:`_Adam`'s numpy expression makes a dozen: on 200 stacked f2's, 14M floats, that is
    ~20 ms against ~120 ms a step). It computes ``√v / √(1-β2ᵗ)`` where :class:`_Adam` computes
    ``√(v/(1-β2ᵗ))``, so the two agree to float32 rounding, not bit for bit. With torch at one
    thread (``run.threads``, the default) it stays on the calling thread.
    """
    p_n = len(nets)
    steps = [_n_steps(p) for p in perms]
    if p_n == 0 or steps[0] == 0:
        return
    if any(a < b for a, b in zip(steps, steps[1:])):
        raise ValueError("nets must be sorted by their number of minibatches, longest first")
    sizes = [len(x) for x in xs]
    width = max(min(n, _BATCH) for n in sizes)  # rows of the longest minibatch
    x_pad = torch.zeros(p_n, max(sizes), xs[0].shape[1])
    y_pad = torch.zeros(p_n, max(sizes))
    idx = torch.zeros(p_n, steps[0], width, dtype=torch.long)  # row of each minibatch slot
    mask = torch.zeros(p_n, steps[0], width)  # 1 where the slot holds a row
    for i, (x, y, ep) in enumerate(zip(xs, ys, perms, strict=True)):
        n, e = len(x), len(ep)
        if n == 0 or e == 0:
            continue
        x_pad[i, :n] = x
        y_pad[i, :n] = y
        nb = -(-n // _BATCH)  # minibatches per epoch; if > 1, width is _BATCH
        slots = torch.zeros(e, nb * width, dtype=torch.long)
        slots[:, :n] = torch.stack(ep)
        idx[i, : e * nb] = slots.reshape(e * nb, width)
        mask[i, : e * nb] = (torch.arange(nb * width) < n).float().reshape(nb, width).repeat(e, 1)
    scale = 2.0 / mask.sum(2, keepdim=True).clamp_min(1.0)  # d mean/d row, per net and step
    pool = {} if scratch is None else scratch

    def buf(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A (P, ...) tensor kept in ``scratch`` across the stacks of one retrain_all: large fresh
        allocations cost a page fault per 4 KiB, about as much as the arithmetic done in them."""
        t = pool.get(name)
        if t is None or tuple(t.shape[1:]) != shape[1:] or t.shape[0] < shape[0]:
            t = pool[name] = torch.empty(shape)
        return t[: shape[0]]

    with torch.no_grad():
        shapes = [(p_n, *nets[0][0].weight.shape), (p_n, *nets[0][0].bias.shape),
                  (p_n, nets[0][2].weight.shape[1]), (p_n, 1)]
        params = [torch.stack([n[0].weight for n in nets], out=buf("w1", shapes[0])),  # (P, h, d)
                  torch.stack([n[0].bias for n in nets], out=buf("b1", shapes[1])),  # (P, h)
                  torch.stack([n[2].weight[0] for n in nets], out=buf("w2", shapes[2])),  # (P, h)
                  torch.stack([n[2].bias for n in nets], out=buf("b2", shapes[3]))]  # (P, 1)
        w1, b1, w2, b2 = params
        m = [buf(f"m{i}", sh).zero_() for i, sh in enumerate(shapes)]
        v = [buf(f"v{i}", sh).zero_() for i, sh in enumerate(shapes)]
        gw1 = buf("gw1", shapes[0])
        rows = torch.arange(p_n)
        for s in range(steps[0]):
            k = sum(1 for n in steps if n > s)  # nets still training: a prefix
            xb = x_pad[rows[:k, None], idx[:k, s]]  # (k, B, d)
            yb = y_pad[rows[:k, None], idx[:k, s]]  # (k, B)
            a = torch.baddbmm(b1[:k, None, :], xb, w1[:k].transpose(1, 2))  # (k, B, h)
            h = torch.relu(a)
            out = torch.bmm(h, w2[:k, :, None]).squeeze(-1) + b2[:k]  # (k, B)
            f = torch.sigmoid(out) if sigmoid else out
            g = mask[:k, s] * scale[:k, s] * (f - yb)  # d loss_i / d f, zero on padding
            if sigmoid:
                g = g * (1.0 - f) * f
            da = g[:, :, None] * w2[:k, None, :] * (a > 0)  # (k, B, h)
            grads = [torch.bmm(da.transpose(1, 2), xb, out=gw1[:k]), da.sum(1),
                     torch.bmm(g[:, None, :], h).squeeze(1), g.sum(1, keepdim=True)]
            _adam_step([p[:k] for p in params], grads, [t[:k] for t in m], [t[:k] for t in v], [],
                       [torch.tensor(float(s)) for _ in params], fused=True, amsgrad=False,
                       beta1=0.9, beta2=0.999, lr=lr, weight_decay=0.0, eps=1e-8, maximize=False)
        for i, net in enumerate(nets):
            net[0].weight.copy_(w1[i])
            net[0].bias.copy_(b1[i])
            net[2].weight.copy_(w2[i][None, :])
            net[2].bias.copy_(b2[i])


def retrain_all(filters: list[NeuralBanditFilter]) -> int:
    """Retrain every stale filter in ``filters`` (each once, however often it is listed) in stacked
    batches of up to ``_GROUP`` filters: the same result as each filter's own
    :meth:`NeuralBanditFilter._retrain` (same minibatches from the same per-filter generator, same
    epochs, same Adam), without a Python loop of tiny ops per filter. Filters whose nets differ in
    shape or in ``lr`` are trained in separate stacks (histories and epochs may differ within one).
    Returns how many were retrained."""
    todo = list({id(f): f for f in filters if f.stale}.values())
    if not batching_on() or len(todo) < 2:
        for f in todo:
            f._retrain()
        return len(todo)
    plans = [f._retrain_plan() for f in todo]  # draws each filter's permutations as _retrain would
    groups: dict[tuple, list[tuple[NeuralBanditFilter, dict]]] = {}
    for f, plan in zip(todo, plans, strict=True):
        key = (f.context_dim, f.feat_dim, f.cfg.hidden, f.cfg.lr)
        groups.setdefault(key, []).append((f, plan))
    scratch: dict[str, torch.Tensor] = {}  # buffers reused from one stack to the next
    for members in groups.values():
        for net, x, y, b, sig in (("f1", "z", "y", "b1", True), ("f2", "phi", "resid", "b2", False)):
            order = sorted(members, key=lambda fp: -_n_steps(fp[1][b]))
            for lo in range(0, len(order), _GROUP):
                chunk = order[lo : lo + _GROUP]
                _fit_stacked([getattr(f, net) for f, _ in chunk], [p[x] for _, p in chunk],
                             [p[y] for _, p in chunk], [p[b] for _, p in chunk], chunk[0][0].cfg.lr, sig,
                             scratch)
            scratch.clear()  # f1 and f2 differ in shape: keep one net's buffers at a time
    return len(todo)


def batching_on() -> bool:
    """Whether :func:`retrain_all` stacks the filters (environment ``LADA_FILTER_BATCHED``, default
    on; ``0``/``false``/``off`` retrains them one by one, :meth:`NeuralBanditFilter._retrain`, for
    before/after measurements). An environment variable, not a config knob: ``lada.common.config``
    is not this module's to change, and the two settings give the same filters to float rounding."""
    return os.environ.get("LADA_FILTER_BATCHED", "1").strip().lower() not in ("0", "false", "no", "off")


# ---------------------------------------------------------------- selection
def select(scores: np.ndarray, budget: int, cfg: FilterConfig) -> list[int]:
    """Indices to allocate from filter scores.

    ``topk``: the ``budget`` highest scores (ties broken by lower index, so it
    is deterministic); ``threshold``: every index with ``score > cfg.threshold``
    (paper: 0.5), highest first, capped at ``budget`` — may return fewer.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if budget <= 0 or len(s) == 0:
        return []
    order = np.argsort(-s, kind="stable")
    if cfg.select == "threshold":
        order = order[s[order] > cfg.threshold]
    return [int(i) for i in order[:budget]]
