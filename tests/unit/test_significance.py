"""Paired significance tests against values computed by hand (exact binomial sums)."""

from __future__ import annotations

import numpy as np
import pytest
from lada.common.significance import binom_cdf_half, mark, mcnemar_exact, paired_bootstrap, pool


def _pairs(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


def test_binomial_cdf_known_values() -> None:
    assert binom_cdf_half(0, 1) == 0.5
    assert binom_cdf_half(1, 7) == 8 / 128
    assert binom_cdf_half(2, 10) == (1 + 10 + 45) / 1024
    assert binom_cdf_half(5, 5) == 1.0 and binom_cdf_half(-1, 5) == 0.0


@pytest.mark.parametrize("a_only,b_only,p", [
    (6, 1, 2 * 8 / 128),            # 0.125
    (1, 9, 2 * 11 / 1024),          # 0.021484375
    (10, 2, 2 * (1 + 12 + 66) / 4096),  # 0.03857421875
    (5, 5, 1.0),
    (0, 0, 1.0),
])
def test_mcnemar_exact_known_values(a_only: int, b_only: int, p: float) -> None:
    a, b = _pairs(a_only, b_only, both=30, neither=40)
    r = mcnemar_exact(a, b)
    assert r.p == pytest.approx(p, rel=1e-12)
    assert (r.a_only, r.b_only, r.n) == (a_only, b_only, a_only + b_only + 70)
    assert r.diff == pytest.approx((a_only - b_only) / r.n)


def test_concordant_items_do_not_change_mcnemar() -> None:
    assert mcnemar_exact(*_pairs(10, 2)).p == mcnemar_exact(*_pairs(10, 2, both=500, neither=900)).p


def test_large_samples_stay_exact_and_symmetric() -> None:
    a, b = _pairs(1200, 1000, both=5000)
    r, s = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert r.p == s.p and 0.0 < r.p < 0.001 and r.diff == -s.diff


def test_bootstrap_agrees_with_mcnemar() -> None:
    a, b = _pairs(40, 15, both=300, neither=645)  # 1000 items, +2.5 points
    m, bs = mcnemar_exact(a, b), paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert bs.diff == m.diff == pytest.approx(0.025)
    assert bs.p < 0.01 and m.p < 0.01
    assert bs.ci is not None and bs.ci[0] > 0 and bs.ci[0] < 0.025 < bs.ci[1]
    null = paired_bootstrap(*_pairs(20, 20, both=100, neither=100), n_boot=2000, seed=1)
    assert null.p > 0.5 and null.ci is not None and null.ci[0] < 0 < null.ci[1]
    assert paired_bootstrap(*_pairs(0, 0, both=5, neither=5), n_boot=200).p == 1.0


def test_pool_pairs_the_same_keys_in_the_same_order() -> None:
    a = {(1, "c2"): [True, False], (0, "c1"): [True, True, True], (2, "c9"): [True]}
    b = {(0, "c1"): [False, False, True], (1, "c2"): [True, True]}
    x, y = pool(a, b)  # (2, "c9") has no partner: left out
    assert x.tolist() == [True, True, True, True, False]
    assert y.tolist() == [False, False, True, True, True]
    with pytest.raises(ValueError, match="same items"):
        pool({0: [True, False]}, {0: [True]})
    with pytest.raises(ValueError, match="no \\(seed"):
        pool({0: [True]}, {1: [True]})


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="same items"):
        mcnemar_exact([True], [True, False])
    with pytest.raises(ValueError, match="at least one"):
        mcnemar_exact([], [])
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap([True], [False], n_boot=10)
    assert np.isclose(mcnemar_exact(np.ones(3, bool), np.zeros(3, bool)).p, 0.25)


def test_marks() -> None:
    assert (mark(0.001), mark(0.03), mark(0.2), mark(None)) == ("**", "*", "", "")
