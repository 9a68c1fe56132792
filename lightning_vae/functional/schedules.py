"""Annealing schedules: pure functions of the training step, and :class:`Schedule` that picks one by name.

Every function maps a step ``t`` (an optimizer step, or an epoch) to a float between ``start`` and
``end``; none keeps state, so a value is always recomputed from the step alone and a resumed run
continues exactly where it stopped. ``end`` may be below ``start`` (a decay, e.g. of free bits).

Sources:
    - Linear warm-up and the logistic schedule: Bowman et al. 2016, "Generating Sentences from a
      Continuous Space" (KL cost annealing).
    - Cyclical schedule: Fu et al. 2019, "Cyclical Annealing Schedule: A Simple Approach to
      Mitigating KL Vanishing" (and its reference code ``frange_cycle_linear/sigmoid/cosine``).
    - Capacity: Burgess et al. 2018, "Understanding disentangling in β-VAE".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lightning_vae.checks import check_choice, check_float, check_int, choices

ScheduleName = Literal["constant", "linear", "logistic", "cosine", "cyclical"]
CycleShape = Literal["linear", "sigmoid", "cosine"]

#: The names of :data:`ScheduleName` and :data:`CycleShape`, as tuples.
SCHEDULE_NAMES: tuple[str, ...] = choices(ScheduleName)
CYCLE_SHAPES: tuple[str, ...] = choices(CycleShape)


def _lerp(start: float, end: float, p: float) -> float:
    """``start + (end - start) * p`` for ``p`` in [0, 1], exact at both ends and never outside [start, end]."""
    if p <= 0.0:
        return start
    if p >= 1.0:
        return end
    value = start + (end - start) * p
    low, high = (start, end) if start <= end else (end, start)
    return min(max(value, low), high)


def _sigmoid(x: float) -> float:
    """``1 / (1 + exp(-x))`` without overflow for any finite ``x``."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def constant_schedule(step: float, value: float = 1.0) -> float:
    """``value`` at every step.

    Example::

        >>> constant_schedule(123, value=0.5)
        0.5
    """
    return value


def linear_schedule(step: float, length: float, start: float = 0.0, end: float = 1.0) -> float:
    """Linear warm-up (Bowman et al. 2016): ``start + (end - start) · min(t / T, 1)``, ``T = length``.

    Steps before 0 give ``start``; from ``t = T`` on the value is ``end``.

    Example::

        >>> linear_schedule(250, length=1000), linear_schedule(5000, length=1000)
        (0.25, 1.0)
    """
    return _lerp(start, end, step / length)


def logistic_schedule(step: float, steepness: float, midpoint: float, start: float = 0.0, end: float = 1.0) -> float:
    """Logistic (sigmoid) annealing (Bowman et al. 2016): ``start + (end - start) / (1 + exp(-k (t - t0)))``.

    ``k = steepness`` and ``t0 = midpoint``; the value is halfway between ``start`` and ``end`` at
    ``t0`` and approaches (never reaches) the two ends.

    Example::

        >>> logistic_schedule(500, steepness=0.01, midpoint=500)
        0.5
    """
    return _lerp(start, end, _sigmoid(steepness * (step - midpoint)))


def cosine_schedule(step: float, length: float, start: float = 0.0, end: float = 1.0) -> float:
    """Half-cosine ramp: ``start + (end - start) · (1 - cos(π · min(t / T, 1))) / 2``, ``T = length``.

    Example::

        >>> round(cosine_schedule(500, length=1000), 12), cosine_schedule(1000, length=1000)
        (0.5, 1.0)
    """
    p = min(max(step / length, 0.0), 1.0)
    return _lerp(start, end, 0.5 * (1.0 - math.cos(math.pi * p)))


def _cycle_shape(u: float, shape: CycleShape) -> float:
    """The rising part of one cycle, ``f(u)`` for ``u`` in [0, 1] (Fu et al. 2019, reference code)."""
    if check_choice("shape", shape, CycleShape) == "linear":
        return u
    if shape == "sigmoid":
        return _sigmoid(12.0 * u - 6.0)
    return 0.5 * (1.0 - math.cos(math.pi * u))


def cyclical_schedule(
    step: float,
    length: float,
    n_cycles: int = 4,
    ratio: float = 0.5,
    shape: CycleShape = "linear",
    start: float = 0.0,
    end: float = 1.0,
) -> float:
    """Cyclical annealing (Fu et al. 2019): ``M`` cycles over ``T`` steps, each rising for a fraction ``R``.

    With period ``P = T / M``, cycle ``c`` starts at step ``⌊c·P⌋`` (as in the paper's reference code
    ``frange_cycle_linear/sigmoid/cosine``, which writes cycle ``c`` at ``int(i + c·P)``: a period that is not
    whole starts a cycle at the step before ``c·P``, never after), and ``u = (t - ⌊c·P⌋) / (R·P)``:
    ``β_t = start + (end - start) · f(u)`` while ``u ≤ 1``, else ``end``; ``f`` is ``u``
    (``"linear"``), ``1 / (1 + exp(-(12u - 6)))`` (``"sigmoid"``) or ``(1 - cos(πu)) / 2``
    (``"cosine"``), as in the reference code. From ``t = T`` on the value stays at ``end``.
    ``n_cycles = 1`` is the monotonic schedule (a single ramp over ``R · T`` steps).

    Example::

        >>> [cyclical_schedule(t, length=100, n_cycles=4, ratio=0.5) for t in (0, 5, 15, 25, 30)]
        [0.0, 0.4, 1.0, 0.0, 0.4]
    """
    if step >= length:
        return end
    period = length / n_cycles
    t = max(step, 0.0)
    cycle = min(int(t // period), n_cycles - 1)
    while cycle > 0 and math.floor(cycle * period) > t:  # float rounding of t // period
        cycle -= 1
    while cycle + 1 < n_cycles and math.floor((cycle + 1) * period) <= t:  # the next cycle starts at ⌊(c+1)·P⌋
        cycle += 1
    u = (t - math.floor(cycle * period)) / (ratio * period)
    if u > 1.0:
        return end
    return _lerp(start, end, _cycle_shape(u, shape))


@dataclass(frozen=True)
class Schedule:
    """A schedule chosen by name, with every parameter validated once; call it with a step.

    The value at step ``t`` is the named function at ``max(t - delay, 0)``, so the schedule holds
    ``start`` for the first ``delay`` steps (``constant`` holds ``end`` throughout).

    Args:
        kind: ``"constant"``, ``"linear"``, ``"logistic"``, ``"cosine"`` or ``"cyclical"``.
        start: Value at the beginning.
        end: Value reached at the end (the value of ``"constant"``).
        length: ``T``: steps of the ramp (``linear``, ``cosine``), or of all cycles (``cyclical``);
            for ``logistic`` it sets the defaults of ``steepness`` and ``midpoint``.
        delay: Steps spent at ``start`` before the schedule begins.
        n_cycles: ``M`` of the cyclical schedule.
        ratio: ``R`` of the cyclical schedule: fraction of each cycle spent rising, in (0, 1].
        shape: Shape of the rise within each cycle: ``"linear"``, ``"sigmoid"`` or ``"cosine"``.
        steepness: ``k`` of the logistic schedule (default ``10 / length``, so the value goes
            from 0.7% to 99.3% of the way over ``length`` steps).
        midpoint: ``t0`` of the logistic schedule (default ``length / 2``).

    Raises:
        TypeError: For a kind or shape that is not a string, a non-number, or a non-int count.
        ValueError: For an unknown kind or shape, NaN or infinity, or numbers out of range.

    Example::

        >>> s = Schedule("cyclical", length=8, n_cycles=2, ratio=0.5)
        >>> [s(t) for t in range(9)]
        [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    """

    kind: ScheduleName = "linear"
    start: float = 0.0
    end: float = 1.0
    length: int = 10_000
    delay: int = 0
    n_cycles: int = 4
    ratio: float = 0.5
    shape: CycleShape = "linear"
    steepness: float | None = None
    midpoint: float | None = None

    def __post_init__(self) -> None:
        check_choice("schedule", self.kind, ScheduleName)
        object.__setattr__(self, "start", check_float("start", self.start))
        object.__setattr__(self, "end", check_float("end", self.end))
        check_int("length", self.length, low=1)
        check_int("delay", self.delay, low=0)
        check_int("n_cycles", self.n_cycles, low=1)
        object.__setattr__(self, "ratio", check_float("ratio", self.ratio, low=0.0, high=1.0, strict_low=True))
        check_choice("cycle_shape", self.shape, CycleShape)
        if self.steepness is not None:
            object.__setattr__(self, "steepness", check_float("steepness", self.steepness, low=0.0, strict_low=True))
        if self.midpoint is not None:
            object.__setattr__(self, "midpoint", check_float("midpoint", self.midpoint))

    @property
    def low(self) -> float:
        """The smallest value the schedule can take."""
        return self.end if self.kind == "constant" else min(self.start, self.end)

    @property
    def high(self) -> float:
        """The largest value the schedule can take."""
        return self.end if self.kind == "constant" else max(self.start, self.end)

    def __call__(self, step: float) -> float:
        """The value at ``step`` (an optimizer step or an epoch, counted from 0)."""
        if self.kind == "constant":
            return constant_schedule(step, self.end)
        t = max(step - self.delay, 0)
        if self.kind == "linear":
            return linear_schedule(t, self.length, self.start, self.end)
        if self.kind == "cosine":
            return cosine_schedule(t, self.length, self.start, self.end)
        if self.kind == "logistic":
            steepness = self.steepness if self.steepness is not None else 10.0 / self.length
            midpoint = self.midpoint if self.midpoint is not None else self.length / 2.0
            return logistic_schedule(t, steepness, midpoint, self.start, self.end)
        return cyclical_schedule(t, self.length, self.n_cycles, self.ratio, self.shape, self.start, self.end)


__all__ = [
    "CYCLE_SHAPES",
    "SCHEDULE_NAMES",
    "CycleShape",
    "Schedule",
    "ScheduleName",
    "constant_schedule",
    "cosine_schedule",
    "cyclical_schedule",
    "linear_schedule",
    "logistic_schedule",
]
