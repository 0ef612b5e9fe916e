"""Learning-rate schedules at the edges the shape tests (test_train.py, test_techniques.py) leave
open: no warm-up, a fractional warm-up, an annealing phase shorter than two updates, steps past
the end. Every expectation is worked out by hand in the comments."""

import math

import numpy as np
import pytest

from klayer.training import schedules as sch

REL = 1e-12


def test_cosine_warm_up_never_exceeds_eta_max_when_it_ends_between_updates():
    # 450 updates, warmup 0.05: up = 22.5. Updates 0..22 warm up (t < 22.5): eta_max (t + 1) / 22.5
    # until t + 1 passes 22.5; the last one, t = 22, is capped at eta_max (23 / 22.5 would be 1.022).
    lo, hi, T, w = 1e-4, 0.1, 450, 0.05
    assert sch.cosine_eta(0, lo, hi, T, w) == pytest.approx(0.1 / 22.5, rel=REL)
    assert sch.cosine_eta(21, lo, hi, T, w) == pytest.approx(0.1 * 22 / 22.5, rel=REL)
    assert sch.cosine_eta(22, lo, hi, T, w) == pytest.approx(0.1, rel=REL)
    eta = np.array([sch.cosine_eta(t, lo, hi, T, w) for t in range(T + 1)])
    assert eta.max() <= hi * (1 + 1e-15)


def test_cosine_anneals_over_a_phase_shorter_than_two_updates():
    # 3 updates, warmup 0.5: up = 1.5, so the anneal takes 1.5 updates and s = (t - 1.5) / 1.5.
    # t=0: 0.1 * 1/1.5; t=1: 0.1 (capped); t=2: s = 1/3, (1 + cos(pi/3)) / 2 = 0.75,
    # 0.01 + 0.75 * 0.09 = 0.0775; t=3: s = 1, eta_min.
    lo, hi = 0.01, 0.1
    got = [sch.cosine_eta(t, lo, hi, 3, 0.5) for t in range(4)]
    np.testing.assert_allclose(got, [0.1 / 1.5, 0.1, 0.0775, 0.01], rtol=REL)


def test_one_cycle_anneals_over_a_phase_shorter_than_two_updates():
    # Same 3 updates, warmup 0.5 (up = 1.5); end = 0.01 / 1e4 = 1e-6.
    # t=1 rises: (1 - cos(pi / 1.5)) / 2 = (1 + 0.5) / 2 = 0.75, 0.01 + 0.75 * 0.09 = 0.0775.
    # t=2 falls: s = 1/3, 0.75 of the way from end to the peak: 1e-6 + 0.75 * (0.1 - 1e-6) = 0.07500025.
    lo, hi = 0.01, 0.1
    got = [sch.one_cycle_eta(t, lo, hi, 3, 0.5) for t in range(4)]
    np.testing.assert_allclose(got, [0.01, 0.0775, 0.07500025, 1e-6], rtol=REL)


def test_one_cycle_without_warm_up_starts_at_its_peak():
    # warmup 0 (allowed by the config): no rising half; t=0 is the peak and t=50 of 100 is
    # half-way down to end = 1e-6: 1e-6 + (0.1 - 1e-6) / 2 = 0.0500005.
    lo, hi = 0.01, 0.1
    assert sch.one_cycle_eta(0, lo, hi, 100, 0.0) == pytest.approx(0.1, rel=REL)
    assert sch.one_cycle_eta(50, lo, hi, 100, 0.0) == pytest.approx(0.0500005, rel=REL)
    assert sch.one_cycle_eta(100, lo, hi, 100, 0.0) == pytest.approx(1e-6, rel=REL)


def test_one_cycle_falls_from_eta_max_to_eta_min_over_1e4():
    # eta_min = 1, eta_max = 3 (comparable, so an error in the floor's term is not lost in the
    # tolerance): 8 updates, warmup 0.25, up = 2, end = 1e-4.
    # t=1: 1 + 2 (1 - cos(pi/2)) / 2 = 2; t=2: 3; t=5: s = 3/6, 1e-4 + (3 - 1e-4) / 2 = 1.50005;
    # t=8: end. The fall's cosine at s = 1/6 and 5/6: (1 + cos(pi/6)) / 2 and (1 - cos(pi/6)) / 2.
    lo, hi, T, w = 1.0, 3.0, 8, 0.25
    c = math.cos(math.pi / 6)
    expected = {0: 1.0, 1: 2.0, 2: 3.0, 3: 1e-4 + (3 - 1e-4) * (1 + c) / 2, 5: 1.50005,
                7: 1e-4 + (3 - 1e-4) * (1 - c) / 2, 8: 1e-4}  # fmt: skip
    for t, eta in expected.items():
        assert sch.one_cycle_eta(t, lo, hi, T, w) == pytest.approx(eta, rel=REL), t


@pytest.mark.parametrize("past", [1, 50, 100, 1000])
def test_one_cycle_and_cosine_stay_at_their_floor_past_the_end(past):
    # 100 updates with warm-up 0.3 / 0.1; at t = 100 + past the schedules have ended.
    lo, hi, T = 0.01, 0.1, 100
    assert sch.cosine_eta(T + past, lo, hi, T, 0.1) == pytest.approx(lo, rel=REL)
    assert sch.one_cycle_eta(T + past, lo, hi, T, 0.3) == pytest.approx(lo / 1e4, rel=REL)
