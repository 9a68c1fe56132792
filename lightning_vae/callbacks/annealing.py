"""KL annealing callbacks: β from a schedule (``KLAnnealing``) and the capacity objective (``CapacityAnnealing``).

Both work on any LightningModule that keeps the annealing protocol (docs/architecture.md): float attributes
that its loss reads at every step (``beta``; ``capacity`` and ``capacity_gamma`` for the capacity
form). Values are recomputed from ``trainer.global_step`` (or the epoch counted from it) before
every training batch, so a run resumed from a checkpoint, or any rank under DDP, uses exactly the
value an uninterrupted single-process run would use at that step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_vae.functional.schedules import CycleShape, Schedule, ScheduleName
from lightning_vae.utilities import logs_this_step

Interval = Literal["step", "epoch"]


def _check_interval(interval: Any) -> Interval:
    if interval not in ("step", "epoch"):
        raise ValueError(f"Expected `interval` to be one of ('step', 'epoch'), got {interval!r}")
    return interval  # type: ignore[no-any-return]


def _check_nonnegative(name: str, value: Any, what: str = "a finite float >= 0") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"Expected `{name}` to be {what}, got {value!r}")
    return float(value)


def require_attribute(pl_module: LightningModule, name: str, owner: str, kind: str = "a float attribute") -> None:
    """Raise a ``TypeError`` naming the protocol when ``pl_module`` has no attribute ``name`` (of the given kind)."""
    if not hasattr(pl_module, name):
        raise TypeError(
            f"{owner} needs a LightningModule with {kind} `{name}` that its loss reads at every step "
            f"(the annealing protocol), got {type(pl_module).__name__} without `{name}`"
        )


def epoch_of_step(trainer: Trainer) -> int:
    """The epoch of the current optimizer step, counted from ``trainer.global_step``.

    Every epoch has ``ceil(num_training_batches / accumulate_grad_batches)`` optimizer steps, so the
    epoch is ``global_step`` divided by that. Unlike ``trainer.current_epoch``, this agrees between
    an uninterrupted run and one resumed from a checkpoint (with Lightning 2.6, a run resumed from a
    mid-epoch or an end-of-epoch checkpoint puts one batch into a different epoch than the
    uninterrupted run did). With a training set of
    unknown length it falls back to ``trainer.current_epoch``.
    """
    batches = trainer.num_training_batches
    if isinstance(batches, int) and batches > 0:
        return trainer.global_step // math.ceil(batches / trainer.accumulate_grad_batches)
    return trainer.current_epoch


class StepValueLogger:
    """Log one value per training step under ``key`` (``on_step=True``), calling ``pl_module.log`` only when needed.

    ``self.log`` costs far more than computing a schedule (hundreds of microseconds on a CPU), so it
    runs only (a) at the first batch of each epoch, and (b) when the value changed since it was last
    logged *and* Lightning hands step values to the loggers after this step (every
    ``log_every_n_steps``; the same test ``LearningRateMonitor`` makes in ``on_train_batch_start``).
    Lightning keeps the last value of an ``on_step`` key and writes it again at every logging step
    of the epoch, so every row the loggers receive holds the value of its own step. The progress bar
    and ``trainer.callback_metrics`` show the value as of the last logging step. Call :meth:`reset`
    from ``on_train_start`` and ``on_train_epoch_start``.
    """

    def __init__(self, key: str, prog_bar: bool) -> None:
        self.key, self.prog_bar = key, prog_bar
        self._last: float | None = None

    def reset(self) -> None:
        self._last = None

    def __call__(self, trainer: Trainer, pl_module: LightningModule, value: float) -> None:
        if self._last is None or (logs_this_step(trainer) and value != self._last):
            # A host tensor: Lightning would copy a Python number to the module's device (a blocking copy on an
            # accelerator), and the progress bar reads it back at every refresh.
            pl_module.log(self.key, torch.tensor(float(value)), prog_bar=self.prog_bar, on_step=True, on_epoch=False)
            self._last = value


class ScheduledAttribute(Callback):
    """Base of the callbacks that set one module attribute from a :class:`Schedule` before every training batch.

    Subclasses name the attribute (``attribute``) and the logged key (``log_key``). The value is
    logged for every step with ``on_step=True`` (through :class:`StepValueLogger`); a module that logs
    the same key itself (``VAE`` logs ``train/beta`` and ``train/free_bits``) logs the same number, and
    Lightning keeps both entries apart (they come from different hooks), so nothing clashes.
    """

    attribute: str = ""
    log_key: str = ""

    def __init__(self, schedule: Schedule, interval: Interval = "step", prog_bar: bool = False) -> None:
        super().__init__()
        self.schedule = schedule
        self.interval: Interval = _check_interval(interval)
        if not isinstance(prog_bar, bool):
            raise TypeError(f"Expected `prog_bar` to be a bool, got {prog_bar!r}")
        self.prog_bar = prog_bar
        self._logger = StepValueLogger(self.log_key, prog_bar)

    def value_at(self, trainer: Trainer) -> float:
        """The scheduled value for the trainer's current optimizer step (or epoch, with ``interval="epoch"``)."""
        return self.schedule(trainer.global_step if self.interval == "step" else epoch_of_step(trainer))

    def check_module(self, pl_module: LightningModule) -> None:
        """Check that ``pl_module`` keeps the part of the protocol this callback writes."""
        require_attribute(pl_module, self.attribute, type(self).__name__)

    def apply(self, trainer: Trainer, pl_module: LightningModule) -> float:
        """Set the module attribute for the current step and return the value."""
        value = self.value_at(trainer)
        setattr(pl_module, self.attribute, value)
        return value

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_module(pl_module)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The loops (global_step, current_epoch) are restored from a checkpoint before this hook.
        self._logger.reset()
        self.apply(trainer, pl_module)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._logger.reset()

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._logger(trainer, pl_module, self.apply(trainer, pl_module))

    @override
    def state_dict(self) -> dict[str, Any]:
        # Every value is derived from the trainer's counters; the settings are kept to warn when a run is
        # resumed with a different schedule than the one it was trained with.
        return {"schedule": dataclasses.asdict(self.schedule), "interval": self.interval}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("schedule")
        current = dataclasses.asdict(self.schedule)
        if saved is not None and (saved != current or state_dict.get("interval", self.interval) != self.interval):
            rank_zero_warn(
                f"{type(self).__name__}: the checkpoint was trained with schedule {saved} "
                f"(interval={state_dict.get('interval')!r}); continuing with {current} (interval={self.interval!r})"
            )


class KLAnnealing(ScheduledAttribute):
    """Anneal the KL weight β of the module from ``start`` to ``end`` on a published schedule.

    Before every training batch ``pl_module.beta`` is set to the schedule's value at
    ``trainer.global_step`` (optimizer steps, so gradient accumulation keeps one β per step), or at
    the epoch with ``interval="epoch"`` (counted from the step, see :func:`epoch_of_step`);
    ``train/beta`` is logged for every step the loggers record and shown in the progress bar.
    Nothing but the step counter is needed, so a run resumed with ``ckpt_path=`` and every DDP rank
    use the same β as an uninterrupted run.

    Schedules (formulas in :mod:`lightning_vae.functional.schedules`): ``"constant"`` (β = ``end``),
    ``"linear"`` warm-up and ``"logistic"`` (Bowman et al. 2016), ``"cosine"``, and ``"cyclical"``
    (Fu et al. 2019: ``n_cycles`` cycles over ``length`` steps, each rising for a fraction ``ratio``
    with ``cycle_shape``, then held at ``end``; ``n_cycles=1`` is the monotonic schedule).

    Args:
        schedule: ``"constant"``, ``"linear"``, ``"logistic"``, ``"cosine"`` or ``"cyclical"``.
        start: β at the beginning (>= 0).
        end: β at the end of the ramp (>= 0).
        length: Length ``T`` of the ramp (of all cycles for ``"cyclical"``), in steps or epochs.
        delay: Steps (epochs) held at ``start`` before the schedule begins.
        interval: ``"step"`` (default) or ``"epoch"``: what ``length`` and ``delay`` count.
        n_cycles: Number of cycles ``M`` of the cyclical schedule.
        ratio: Fraction ``R`` of each cycle spent rising, in (0, 1].
        cycle_shape: Rise within a cycle: ``"linear"``, ``"sigmoid"`` or ``"cosine"``.
        steepness: ``k`` of the logistic schedule (default ``10 / length``).
        midpoint: ``t0`` of the logistic schedule (default ``length / 2``).
        prog_bar: Show ``train/beta`` in the progress bar.

    Raises:
        ValueError: For an unknown schedule, shape or interval, or numbers out of range (the message
            names the argument).
        TypeError: If the module has no ``beta`` attribute (raised at ``setup``).

    Example::

        >>> cb = KLAnnealing("cyclical", length=10_000, n_cycles=4, ratio=0.5)
        >>> cb.schedule(0), cb.schedule(625), cb.schedule(2_000), cb.schedule(2_500)
        (0.0, 0.5, 1.0, 0.0)
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[cb], logger=False, enable_progress_bar=False)
    """

    attribute = "beta"
    log_key = "train/beta"

    def __init__(
        self,
        schedule: ScheduleName = "linear",
        start: float = 0.0,
        end: float = 1.0,
        length: int = 10_000,
        delay: int = 0,
        interval: Interval = "step",
        n_cycles: int = 4,
        ratio: float = 0.5,
        cycle_shape: CycleShape = "linear",
        steepness: float | None = None,
        midpoint: float | None = None,
        prog_bar: bool = True,
    ) -> None:
        _check_nonnegative("start", start)
        _check_nonnegative("end", end)
        super().__init__(
            Schedule(schedule, start, end, length, delay, n_cycles, ratio, cycle_shape, steepness, midpoint),
            interval=interval,
            prog_bar=prog_bar,
        )


class CapacityAnnealing(ScheduledAttribute):
    """The capacity objective of Burgess et al. (2018): ``recon + γ·|KL − C|`` with C rising linearly.

    Before every training batch ``pl_module.capacity`` is set to
    ``C_t = c_start + (c_max − c_start) · min(t / length, 1)`` (after ``delay`` steps at
    ``c_start``) and, unless ``gamma`` is ``None``, ``pl_module.capacity_gamma`` to ``gamma``; the
    module's loss must then be the capacity form (``VAE`` switches to it as soon as ``capacity`` is
    set). ``train/capacity`` is logged for every step the loggers record and shown in the progress bar.

    Args:
        c_max: Final capacity C in nats per example (the paper: 25 nats on dSprites).
        length: Steps (epochs) over which C rises (the paper: 100,000 iterations).
        gamma: γ (the paper: 1000); ``None`` keeps the module's ``capacity_gamma``.
        c_start: Capacity at the beginning.
        delay: Steps (epochs) held at ``c_start`` first.
        interval: ``"step"`` (default) or ``"epoch"``.
        prog_bar: Show ``train/capacity`` in the progress bar.

    Raises:
        ValueError: For negative or non-finite capacities, γ <= 0, or bad lengths; at ``setup``, for
            a module that trains with several importance samples (the capacity form is a single-sample
            objective).
        TypeError: If the module has no ``capacity`` (or, with ``gamma`` set, no ``capacity_gamma``) attribute.

    Example::

        >>> cb = CapacityAnnealing(c_max=25.0, length=100_000, gamma=1000.0)
        >>> cb.schedule(0), cb.schedule(50_000), cb.schedule(200_000)
        (0.0, 12.5, 25.0)
    """

    attribute = "capacity"
    log_key = "train/capacity"

    def __init__(
        self,
        c_max: float,
        length: int,
        gamma: float | None = 1000.0,
        c_start: float = 0.0,
        delay: int = 0,
        interval: Interval = "step",
        prog_bar: bool = True,
    ) -> None:
        _check_nonnegative("c_max", c_max)
        _check_nonnegative("c_start", c_start)
        if gamma is not None:
            gamma = _check_nonnegative("gamma", gamma, "a finite float > 0")
            if gamma == 0:
                raise ValueError(f"Expected `gamma` to be a finite float > 0, got {gamma!r}")
        self.gamma = gamma
        super().__init__(Schedule("linear", c_start, c_max, length, delay), interval=interval, prog_bar=prog_bar)

    @override
    def check_module(self, pl_module: LightningModule) -> None:
        super().check_module(pl_module)
        if self.gamma is not None:
            require_attribute(pl_module, "capacity_gamma", type(self).__name__)
        n_samples = getattr(pl_module, "n_samples", 1)
        if isinstance(n_samples, int) and n_samples > 1:
            raise ValueError(
                f"CapacityAnnealing needs the single-sample objective, got a module with n_samples={n_samples}; "
                "set n_samples=1"
            )

    @override
    def apply(self, trainer: Trainer, pl_module: LightningModule) -> float:
        if self.gamma is not None:
            setattr(pl_module, "capacity_gamma", self.gamma)  # noqa: B010 - a protocol attribute of any module
        return super().apply(trainer, pl_module)


__all__ = [
    "CapacityAnnealing",
    "Interval",
    "KLAnnealing",
    "ScheduledAttribute",
    "StepValueLogger",
    "epoch_of_step",
    "require_attribute",
]
