"""Schedules against hand-computed values of the published formulas and the reference code of Fu et al. (2019)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightning_vae.functional.schedules import (
    Schedule,
    constant_schedule,
    cosine_schedule,
    cyclical_schedule,
    linear_schedule,
    logistic_schedule,
)


# ---------------------------------------------------------------- references
def fu_cycle(n_iter: int, n_cycle: int, ratio: float, shape: str) -> np.ndarray:
    """The reference code of Fu et al. 2019 (``frange_cycle_linear/sigmoid/cosine``, start=0, stop=1), transcribed."""
    values = np.ones(n_iter)
    period = n_iter / n_cycle
    step = 1.0 / (period * ratio)
    for c in range(n_cycle):
        v, i = 0.0, 0
        while v <= 1.0 and int(i + c * period) < n_iter:
            if shape == "linear":
                values[int(i + c * period)] = v
            elif shape == "sigmoid":
                values[int(i + c * period)] = 1.0 / (1.0 + np.exp(-(v * 12.0 - 6.0)))
            else:
                values[int(i + c * period)] = 0.5 - 0.5 * math.cos(v * math.pi)
            v += step
            i += 1
    return values


# ---------------------------------------------------------------- hand-computed values
def test_constant() -> None:
    assert constant_schedule(0, 0.3) == 0.3
    assert constant_schedule(10**9, 0.3) == 0.3
    assert Schedule("constant", start=5.0, end=0.7)(123) == 0.7


def test_linear_warmup_bowman() -> None:
    # Bowman et al. 2016: beta_t = min(1, t / T)
    T = 10_000
    cases = [(0, 0.0), (1, 1e-4), (2_500, 0.25), (5_000, 0.5), (9_999, 0.9999), (10_000, 1.0), (50_000, 1.0)]
    for t, expected in cases:
        assert linear_schedule(t, T) == pytest.approx(expected, abs=1e-15)
    # start/end: a ramp from 0.2 to 0.6 is 0.4 at the halfway point, and a decay works the same way
    assert linear_schedule(50, 100, start=0.2, end=0.6) == pytest.approx(0.4)
    assert linear_schedule(25, 100, start=1.0, end=0.0) == pytest.approx(0.75)
    assert linear_schedule(-5, 100, start=0.2, end=0.6) == 0.2


def test_logistic_bowman() -> None:
    # 1 / (1 + exp(-k (t - t0))) with the usual k = 0.0025, t0 = 2500 (Sentence-VAE re-implementations)
    k, t0 = 0.0025, 2500
    assert logistic_schedule(t0, k, t0) == 0.5
    # at t0 + ln(3)/k the sigmoid is 1 / (1 + 1/3) = 3/4; at t0 - ln(3)/k it is 1/4
    assert logistic_schedule(t0 + math.log(3) / k, k, t0) == pytest.approx(0.75, abs=1e-12)
    assert logistic_schedule(t0 - math.log(3) / k, k, t0) == pytest.approx(0.25, abs=1e-12)
    assert logistic_schedule(0, k, t0) == pytest.approx(1 / (1 + math.exp(6.25)), rel=1e-12)
    # scaled to [start, end]
    assert logistic_schedule(t0, k, t0, start=2.0, end=4.0) == 3.0
    # no overflow far from the midpoint
    assert logistic_schedule(-1e9, 1.0, 0.0) == 0.0
    assert logistic_schedule(1e9, 1.0, 0.0) == 1.0


def test_cosine() -> None:
    # (1 - cos(pi t / T)) / 2: 1/4 at T/3, 1/2 at T/2, 3/4 at 2T/3
    T = 300
    assert cosine_schedule(0, T) == 0.0
    assert cosine_schedule(100, T) == pytest.approx(0.25, abs=1e-12)
    assert cosine_schedule(150, T) == pytest.approx(0.5, abs=1e-12)
    assert cosine_schedule(200, T) == pytest.approx(0.75, abs=1e-12)
    assert cosine_schedule(300, T) == 1.0
    assert cosine_schedule(10_000, T) == 1.0


def test_cyclical_hand_values() -> None:
    # T = 100, M = 4, R = 0.5: period 25, rising for 12.5 steps with slope 1 / 12.5 = 0.08
    expected = {0: 0.0, 1: 0.08, 5: 0.4, 12: 0.96, 13: 1.0, 24: 1.0, 25: 0.0, 30: 0.4, 99: 1.0, 100: 1.0, 1000: 1.0}
    for t, value in expected.items():
        assert cyclical_schedule(t, 100, n_cycles=4, ratio=0.5) == pytest.approx(value, abs=1e-12), t
    # sigmoid shape: f(u) = 1 / (1 + exp(-(12u - 6))); at u = 0.5 (t = 6.25 of a 25-step period) it is 1/2
    assert cyclical_schedule(6.25, 100, shape="sigmoid") == pytest.approx(0.5, abs=1e-12)
    # cosine shape: (1 - cos(pi u)) / 2 at u = 1/3 is 1/4
    assert cyclical_schedule(12.5 / 3, 100, shape="cosine") == pytest.approx(0.25, abs=1e-12)


def ramp_ends(n_iter: int, n_cycle: int, ratio: float) -> np.ndarray:
    """Steps ``int(i + c·P)`` of the reference's loop at ``i = R·P`` exactly (the last step of a ramp)."""
    period = n_iter / n_cycle
    ends = np.zeros(n_iter, dtype=bool)
    for c in range(n_cycle):
        i = ratio * period
        if i == int(i) and int(i + c * period) < n_iter:
            ends[int(i + c * period)] = True
    return ends


CYCLES = [(100, 4, 0.5), (1000, 4, 0.5), (400, 2, 0.8), (120, 1, 0.25)]
#: Periods that are not whole: the reference starts cycle c at int(c·P), the step before c·P.
UNEVEN_CYCLES = [(1000, 3, 0.5), (100, 3, 0.5), (10, 3, 1.0), (7, 4, 0.5), (1000, 7, 0.3), (50, 6, 0.75)]


@pytest.mark.parametrize("shape", ["linear", "sigmoid", "cosine"])
@pytest.mark.parametrize(("n_iter", "n_cycle", "ratio"), CYCLES + UNEVEN_CYCLES)
def test_cyclical_matches_reference_code(shape: str, n_iter: int, n_cycle: int, ratio: float) -> None:
    reference = fu_cycle(n_iter, n_cycle, ratio, shape)
    ours = np.array([cyclical_schedule(t, n_iter, n_cycle, ratio, shape) for t in range(n_iter)])
    # At a step where u = 1 exactly, the reference's accumulated float `v` lands on either side of 1, so it
    # writes f(1) or leaves 1; the paper's formula (u <= 1) gives f(1). Compare those steps with the formula.
    edge = ramp_ends(n_iter, n_cycle, ratio)
    np.testing.assert_allclose(ours[~edge], reference[~edge], atol=1e-9)
    f_one = {"linear": 1.0, "sigmoid": 1.0 / (1.0 + math.exp(-6.0)), "cosine": 1.0}[shape]
    np.testing.assert_allclose(ours[edge], f_one, atol=1e-12)
    assert (~edge).sum() >= n_iter - n_cycle


def test_a_cycle_of_a_period_that_is_not_whole_starts_at_the_step_before() -> None:
    """T = 1000, M = 3: P = 333.3, so the second cycle starts at step 333 (reference: 0.0 there), not 334."""
    assert fu_cycle(1000, 3, 0.5, "linear")[333] == 0.0
    assert cyclical_schedule(333, 1000, 3) == 0.0
    assert cyclical_schedule(332, 1000, 3) == 1.0
    assert cyclical_schedule(666, 1000, 3) == 0.0  # int(2 · 333.3) = 666
    schedule = Schedule("cyclical", length=1000, n_cycles=3, ratio=0.5)  # what KLAnnealing calls
    assert [schedule(t) for t in (332, 333, 334)] == [1.0, 0.0, pytest.approx(1 / (0.5 * 1000 / 3))]


def test_cyclical_single_cycle_is_monotonic_schedule() -> None:
    # M = 1: one ramp over R * T steps, then held: the linear warm-up of length R * T
    T, R = 1000, 0.3
    for t in range(0, 1500, 7):
        assert cyclical_schedule(t, T, n_cycles=1, ratio=R) == pytest.approx(linear_schedule(t, R * T), abs=1e-12)


def test_capacity_burgess() -> None:
    # Burgess et al. 2018: C from 0 to 25 nats over 100,000 iterations (CapacityAnnealing's linear schedule)
    c = Schedule("linear", start=0.0, end=25.0, length=100_000)
    assert c(0) == 0.0
    assert c(20_000) == pytest.approx(5.0)
    assert c(100_000) == 25.0
    assert c(300_000) == 25.0
    assert Schedule("linear", start=2.0, end=10.0, length=100)(50) == pytest.approx(6.0)


# ---------------------------------------------------------------- Schedule
def test_schedule_delay_and_defaults() -> None:
    s = Schedule("linear", start=0.1, end=0.9, length=100, delay=50)
    assert [s(t) for t in (0, 49, 50)] == [0.1, 0.1, 0.1]
    assert s(100) == pytest.approx(0.5)
    assert s(150) == 0.9
    # logistic defaults: midpoint length / 2, steepness 10 / length
    lg = Schedule("logistic", length=1000)
    assert lg(500) == 0.5
    assert lg(1000) == pytest.approx(1 / (1 + math.exp(-5)))
    assert Schedule("logistic", steepness=0.5, midpoint=3.0)(3) == 0.5


@pytest.mark.parametrize("kind", ["constant", "linear", "logistic", "cosine", "cyclical"])
@pytest.mark.parametrize(("start", "end"), [(0.0, 1.0), (0.25, 3.0), (2.0, 0.0), (0.1, 0.1)])
@pytest.mark.parametrize("shape", ["linear", "sigmoid", "cosine"])
def test_schedule_stays_within_bounds(kind: str, start: float, end: float, shape: str) -> None:
    s = Schedule(kind, start=start, end=end, length=97, delay=5, n_cycles=3, ratio=0.7, shape=shape)  # type: ignore[arg-type]
    low, high = min(start, end), max(start, end)
    if kind == "constant":
        low = high = end
    assert (s.low, s.high) == (low, high)
    values = [s(t) for t in range(0, 250)] + [s(t + 0.5) for t in range(0, 120)]
    assert all(low <= v <= high for v in values)
    assert all(math.isfinite(v) for v in values)


@pytest.mark.parametrize("kind", ["linear", "cosine", "logistic"])
def test_ramps_are_monotonic(kind: str) -> None:
    up = Schedule(kind, start=0.0, end=2.0, length=50)  # type: ignore[arg-type]
    down = Schedule(kind, start=2.0, end=0.0, length=50)  # type: ignore[arg-type]
    ups, downs = [up(t) for t in range(80)], [down(t) for t in range(80)]
    assert all(a <= b for a, b in zip(ups, ups[1:]))
    assert all(a >= b for a, b in zip(downs, downs[1:]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kind": "exponential"}, ValueError, r"Expected `schedule` to be one of .*got 'exponential'"),
        ({"length": 0}, ValueError, r"Expected `length` to be an int >= 1, got 0"),
        ({"length": 2.5}, TypeError, r"Expected `length` to be an int, got 2.5 \(float\)"),
        ({"delay": -1}, ValueError, r"Expected `delay` to be an int >= 0, got -1"),
        ({"n_cycles": 0}, ValueError, r"Expected `n_cycles` to be an int >= 1, got 0"),
        ({"ratio": 0.0}, ValueError, r"Expected `ratio` to be a finite float > 0 and <= 1, got 0.0"),
        ({"ratio": 1.5}, ValueError, r"Expected `ratio` to be a finite float > 0 and <= 1, got 1.5"),
        ({"ratio": "0.5"}, TypeError, r"Expected `ratio` to be a finite float, got '0.5' \(str\)"),
        ({"shape": "square"}, ValueError, r"Expected `cycle_shape` to be one of .*got 'square'"),
        ({"shape": None}, TypeError, r"Expected `cycle_shape` to be one of .*got None"),
        ({"kind": 1}, TypeError, r"Expected `schedule` to be one of .*got 1 \(int\)"),
        ({"start": float("nan")}, ValueError, r"Expected `start` to be a finite float, got nan"),
        ({"end": "1"}, TypeError, r"Expected `end` to be a finite float, got '1'"),
        ({"steepness": -1.0}, ValueError, r"Expected `steepness` to be a finite float > 0, got -1.0"),
        ({"midpoint": float("inf")}, ValueError, r"Expected `midpoint` to be a finite float, got inf"),
    ],
)
def test_schedule_validation(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Schedule(**kwargs)
