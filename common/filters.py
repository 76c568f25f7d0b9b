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
from collections.abc import Callable

import numpy as np
import torch
from lada.common.config import FilterConfig
from torch import nn

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


def kmeans_cold_start(contexts: np.ndarray, k: int, seed: int) -> list[int]:
    """Round-1 allocation without reward history: k samples spread over the context space.

    Columns are standardised (``z = (x - mean) / std``) so no statistic
    dominates the distance, K-means (k-means++ init, Lloyd iterations
    ``c_j = mean{x : argmin_l ||x - c_l|| = j}``) finds k clusters, and for each
    centroid the nearest sample not yet taken is returned. The result is
    exactly ``min(k, n)`` distinct indices; deterministic for ``seed``.
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
    std = x.std(0)
    x = (x - x.mean(0)) / np.where(std > _EPS, std, 1.0)
    rng = np.random.default_rng(seed)
    c = _kmeans_pp(x, k, rng)
    for _ in range(_KMEANS_ITERS):
        labels = _sqdist(x, c).argmin(1)
        new = c.copy()
        for j in range(k):
            members = labels == j
            if members.any():  # an empty cluster keeps its centre
                new[j] = x[members].mean(0)
        if np.allclose(new, c):
            break
        c = new
    order = np.argsort(_sqdist(x, c), axis=0, kind="stable")  # (n, k): samples by distance per centroid
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


class NeuralBanditFilter:
    """EE-Net-style learnability filter for one (receiver, sender) pair.

    - exploitation ``f1(x) = sigmoid(w2ᵀ h(x) + b2)``, ``h(x) = relu(W1 x + b1)``,
      predicts the reward ``r`` in [0, 1];
    - exploration ``f2(φ(x)) = tanh(MLP(φ(x)))`` in [-1, 1] predicts the residual
      ``r - f1(x)``, i.e. where ``f1`` is too pessimistic (positive) or too
      optimistic (negative). Its input ``φ`` is either the gradient of ``f1``
      w.r.t. its last layer, in closed form
      ``∂f1/∂(w2, b2) = σ'(z)·[h(x); 1]`` with ``σ'(z) = f1(1 - f1)``
      (``exploration_input="grad"``), or ``h(x)`` itself (``"hidden"``);
    - ``score(x) = f1(x) + λ·f2(φ(x))``.

    ``update`` appends the observed rewards to the history and retrains both
    nets (warm-started) on the whole history for ``cfg.epochs`` epochs: first
    ``f1`` with MSE to ``r``, then, with ``f1`` frozen, ``f2`` with MSE to
    ``r - f1(x)``. Contexts are standardised with mean/std fitted on the
    history. A per-filter ``torch.Generator`` drives init and shuffling, so the
    filter is deterministic for its seed and its state round-trips exactly.
    """

    def __init__(self, context_dim: int, cfg: FilterConfig, seed: int) -> None:
        if context_dim < 1:
            raise ValueError("context_dim must be >= 1")
        self.context_dim = context_dim
        self.cfg = cfg
        self._gen = torch.Generator().manual_seed(int(seed))
        self.f1 = _mlp(context_dim, cfg.hidden, self._gen)
        feat_dim = cfg.hidden + 1 if cfg.exploration_input == "grad" else cfg.hidden
        self.f2 = _mlp(feat_dim, cfg.hidden, self._gen)
        self.hist_x = torch.zeros(0, context_dim)
        self.hist_r = torch.zeros(0)
        self.x_mean = torch.zeros(context_dim)
        self.x_std = torch.ones(context_dim)

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

    def _f1(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f1 prediction in [0, 1], last hidden activation h) for standardised z."""
        h = self.f1[1](self.f1[0](z))
        return torch.sigmoid(self.f1[2](h)).squeeze(-1), h

    def _features(self, p: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Detached input of f2: σ'(z)·[h; 1] (grad) or h (hidden)."""
        if self.cfg.exploration_input == "grad":
            g = (p * (1.0 - p)).unsqueeze(-1)
            return (g * torch.cat([h, torch.ones_like(h[:, :1])], dim=1)).detach()
        return h.detach()

    def _f2(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.f2(feats)).squeeze(-1)

    def score(self, contexts: np.ndarray) -> np.ndarray:
        """``f1(x) + λ·f2(φ(x))`` per context row (float64, shape (n,))."""
        x = self._to_tensor(contexts)
        if len(x) == 0:
            return np.zeros(0)
        with torch.no_grad():
            p, h = self._f1(self._standardize(x))
            s = p + self.cfg.lam * self._f2(self._features(p, h)) if self.cfg.lam > 0 else p
        return s.double().numpy()

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

    def update(self, contexts: np.ndarray, rewards: np.ndarray | list[float]) -> None:
        """Add (context, reward) observations and retrain f1, then f2, on the whole history."""
        x = self._to_tensor(contexts)
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float32).reshape(-1))
        if len(r) != len(x):
            raise ValueError(f"{len(x)} contexts but {len(r)} rewards")
        if not torch.isfinite(r).all():
            raise ValueError("rewards must be finite")
        if len(x) == 0:
            return
        self.hist_x = torch.cat([self.hist_x, x])
        self.hist_r = torch.cat([self.hist_r, r])
        n = len(self.hist_r)
        self.x_mean = self.hist_x.mean(0)
        std = self.hist_x.std(0, unbiased=False) if n > 1 else torch.ones(self.context_dim)
        self.x_std = torch.where(std > 1e-6, std, torch.ones_like(std))
        z = self._standardize(self.hist_x)
        y = self.hist_r

        def f1_loss(idx: torch.Tensor) -> torch.Tensor:
            return torch.mean((self._f1(z[idx])[0] - y[idx]) ** 2)

        self.f1.train()
        self._fit(f1_loss, list(self.f1.parameters()), n)
        with torch.no_grad():
            p, h = self._f1(z)
            feats = self._features(p, h)
            resid = y - p

        def f2_loss(idx: torch.Tensor) -> torch.Tensor:
            return torch.mean((self._f2(feats[idx]) - resid[idx]) ** 2)

        self._fit(f2_loss, list(self.f2.parameters()), n)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume (weights, history, input stats, RNG), as
        contiguous standalone tensors, so ``safetensors.torch.save_file`` works."""
        out: dict[str, torch.Tensor] = {}
        for name, net in (("f1", self.f1), ("f2", self.f2)):
            for k, v in net.state_dict().items():
                out[f"{name}.{k}"] = v.detach().clone().contiguous()
        out["hist_x"] = self.hist_x.clone().contiguous()
        out["hist_r"] = self.hist_r.clone().contiguous()
        out["x_mean"] = self.x_mean.clone().contiguous()
        out["x_std"] = self.x_std.clone().contiguous()
        out["rng_state"] = self._gen.get_state().clone()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_dict` (shapes must match this filter's config)."""
        for name, net in (("f1", self.f1), ("f2", self.f2)):
            prefix = f"{name}."
            net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        hist_x = torch.as_tensor(state["hist_x"], dtype=torch.float32)
        if hist_x.ndim != 2 or hist_x.shape[1] != self.context_dim:
            raise ValueError(f"hist_x has shape {tuple(hist_x.shape)}, filter has context_dim {self.context_dim}")
        self.hist_x = hist_x.clone().reshape(-1, self.context_dim)
        self.hist_r = torch.as_tensor(state["hist_r"], dtype=torch.float32).clone()
        self.x_mean = torch.as_tensor(state["x_mean"], dtype=torch.float32).clone()
        self.x_std = torch.as_tensor(state["x_std"], dtype=torch.float32).clone()
        self._gen.set_state(torch.as_tensor(state["rng_state"], dtype=torch.uint8).clone())


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
