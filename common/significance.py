"""Paired significance tests on per-item correctness (pure Python / numpy).

Two methods evaluated on the *same* held-out items (same seeds, same clients)
are compared item by item, so the test-sampling error that both share cancels:
a 2-point gap that a 1,000-item binomial standard error (~1.4 points at 25 %)
would hide can still be significant when the methods disagree on few items.

* :func:`mcnemar_exact` -- McNemar's exact test: under H0 the discordant pairs
  (right under A only, right under B only) split as Binomial(n, 1/2).
* :func:`paired_bootstrap` -- resamples paired items; gives a confidence
  interval of the accuracy difference as well as a p-value.

Pooling over clients and seeds is concatenation of aligned item vectors
(:func:`pool`), never a comparison of means of means.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np


@dataclass(frozen=True)
class PairedResult:
    """Outcome of a paired comparison of A against B (difference = acc_A - acc_B)."""

    n: int  # paired items
    diff: float  # accuracy of A minus accuracy of B, in [-1, 1]
    p: float  # two-sided p-value
    a_only: int  # items right under A and wrong under B
    b_only: int  # items right under B and wrong under A
    ci: tuple[float, float] | None = None  # bootstrap confidence interval of diff (bootstrap only)


def _as_pair(a: Sequence[bool], b: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=bool).reshape(-1)
    y = np.asarray(b, dtype=bool).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"paired tests need the same items: {len(x)} against {len(y)} results")
    if len(x) == 0:
        raise ValueError("paired tests need at least one item")
    return x, y


def binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integer arithmetic, then one division)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(comb(n, i) for i in range(k + 1)) / (1 << n)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> PairedResult:
    """McNemar's exact two-sided test of per-item correctness ``a`` against ``b``.

    p = min(1, 2 * P(X <= min(n01, n10))), X ~ Binomial(n01 + n10, 1/2); no discordant
    pair gives p = 1."""
    x, y = _as_pair(a, b)
    a_only = int(np.sum(x & ~y))
    b_only = int(np.sum(~x & y))
    n = a_only + b_only
    p = 1.0 if n == 0 else min(1.0, 2.0 * binom_cdf_half(min(a_only, b_only), n))
    return PairedResult(len(x), (a_only - b_only) / len(x), p, a_only, b_only)


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], n_boot: int = 10000, seed: int = 0,
                     level: float = 0.95) -> PairedResult:
    """Paired bootstrap of the accuracy difference: resample items with replacement (the same
    items for A and B). Two-sided p = 2 * the smaller tail share of resampled differences at or
    beyond 0 (at least 1 / n_boot, the resolution of the test)."""
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x, y = _as_pair(a, b)
    d = x.astype(np.int8) - y.astype(np.int8)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for lo in range(0, n_boot, 1000):  # chunks keep memory at 1000 x n
        k = min(1000, n_boot - lo)
        idx = rng.integers(0, len(d), size=(k, len(d)))
        means[lo:lo + k] = d[idx].mean(axis=1)
    diff = int(d.sum()) / len(d)
    if np.all(d == 0):
        p = 1.0
    else:
        p = min(1.0, max(2.0 * min(np.mean(means <= 0), np.mean(means >= 0)), 1.0 / n_boot))
    q = (1 - level) / 2
    ci = (float(np.quantile(means, q)), float(np.quantile(means, 1 - q)))
    return PairedResult(len(d), diff, float(p), int(np.sum(d > 0)), int(np.sum(d < 0)), ci)


def pool(a: Mapping[Hashable, Sequence[bool]], b: Mapping[Hashable, Sequence[bool]]
         ) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-(seed, client) item vectors of two methods, key by key, in sorted order.

    Only keys both have are paired; a key whose vectors differ in length is an error (not the
    same held-out items)."""
    keys = sorted(set(a) & set(b), key=repr)
    if not keys:
        raise ValueError("no (seed, subject) evaluated under both methods")
    xs, ys = [], []
    for k in keys:
        x, y = _as_pair(a[k], b[k])
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def mark(p: float | None) -> str:
    """Significance mark of a table cell: ``**`` p < 0.01, ``*`` p < 0.05, empty otherwise."""
    if p is None:
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""
