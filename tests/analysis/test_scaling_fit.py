"""The optional parametric fit (mltrain.analysis.judging.scaling_fit) on synthetic points of a known law."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mltrain.analysis.judging import scaling_fit as FIT

# a Chinchilla-like law (Hoffmann et al. 2022 report E=1.69, A=406.4, B=410.7, α=0.34, β=0.28)
TRUE = FIT.Fit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
N = [1e5, 3e5, 1e6, 3e6, 1e7]
D = [1e6, 3e6, 1e7, 3e7, 1e8]


def test_the_fit_recovers_a_known_law_from_noiseless_points():
    n, d = zip(*itertools.product(N, D))
    f = FIT.fit(n, d, TRUE.loss(n, d))
    # tolerance: 1 % on E, α, β; 10 % on A, B (they trade off with the exponents)
    assert f.E == pytest.approx(TRUE.E, rel=0.01)
    assert f.alpha == pytest.approx(TRUE.alpha, rel=0.01)
    assert f.beta == pytest.approx(TRUE.beta, rel=0.01)
    assert f.A == pytest.approx(TRUE.A, rel=0.1) and f.B == pytest.approx(TRUE.B, rel=0.1)


def test_compute_optimal_allocation_spends_c_and_is_the_minimum():
    c = 1e18
    n, d = TRUE.optimal(c)
    assert 6 * n * d == pytest.approx(c)
    # on the IsoFLOP line N·D = C/6 the loss is lowest at N*: 10 % either way is worse
    for k in (0.9, 1.1):
        assert TRUE.loss(n * k, d / k) > TRUE.loss(n, d)


@pytest.mark.slow
def test_bootstrap_intervals_hold_the_truth_with_noise():
    rng = np.random.default_rng(1)
    n, d = (np.asarray(x) for x in zip(*itertools.product(N, D)))
    loss = TRUE.loss(n, d) * np.exp(rng.normal(0, 0.002, len(n)))
    boots = FIT.bootstrap(n, d, loss, rounds=20)
    assert len(boots) >= 15
    lo, hi = FIT.interval([b.E for b in boots])
    assert lo - 0.05 <= TRUE.E <= hi + 0.05 and hi - lo < 0.5


def test_too_few_points_is_one_clear_error():
    with pytest.raises(ValueError, match="needs at least 5 points, got 3"):
        FIT.fit([1, 2, 3], [1, 2, 3], [3, 2, 1])
