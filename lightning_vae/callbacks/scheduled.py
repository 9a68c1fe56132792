"""The base of the callbacks that set a module attribute from a schedule before every training batch.

:class:`ScheduledAttribute` recomputes the value from ``trainer.global_step`` (or the epoch counted from
it, :func:`epoch_of_step`), so a run resumed from a checkpoint, or any rank under DDP, uses exactly the
value an uninterrupted single-process run would use at that step. :class:`StepValueLogger` logs one
value per step without calling ``self.log`` on steps whose values no logger receives.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_vae.checks import check_choice, check_type
from lightning_vae.functional.schedules import Schedule
from lightning_vae.protocols import Annealable, require
from lightning_vae.utilities import logs_this_step, record_hparam

#: What a schedule's ``length`` and ``delay`` count.
Interval = Literal["step", "epoch"]


def epoch_of_step(trainer: Trainer) -> int:
    """The epoch of the current optimizer step, counted from ``trainer.global_step``.

    Every epoch has ``ceil(num_training_batches / accumulate_grad_batches)`` optimizer steps, so the
    epoch is ``global_step`` divided by that. Unlike ``trainer.current_epoch``, this agrees between
    an uninterrupted run and one resumed from a checkpoint. With a training set of unknown length it
    falls back to ``trainer.current_epoch``.
    """
    batches = trainer.num_training_batches
    if isinstance(batches, int) and batches > 0:
        return trainer.global_step // math.ceil(batches / trainer.accumulate_grad_batches)
    # A resumed run's current_epoch can place a batch at an epoch boundary into the other epoch.
    return trainer.current_epoch


class StepValueLogger:
    """Log one value per training step under ``key`` (``on_step=True``), calling ``pl_module.log`` only when needed.

    ``self.log`` costs far more than computing a schedule, so it runs only (a) at the first batch of
    each epoch, and (b) when the value changed since it was last logged *and* the loggers receive
    step values after this step (every ``log_every_n_steps``,
    :func:`~lightning_vae.utilities.logs_this_step`). Every row the loggers receive holds the value of
    its own step; the progress bar and ``trainer.callback_metrics`` show the value as of the last
    logging step. Call :meth:`reset` from ``on_train_start`` and ``on_train_epoch_start``.

    Example::

        >>> StepValueLogger("train/beta", prog_bar=True).key
        'train/beta'
    """

    def __init__(self, key: str, prog_bar: bool) -> None:
        self.key, self.prog_bar = key, prog_bar
        self._last: float | None = None

    def reset(self) -> None:
        """Log at the next call, whatever the value."""
        self._last = None

    def __call__(self, trainer: Trainer, pl_module: LightningModule, value: float) -> None:
        # An unchanged value need not be logged again: the last value of an on_step key is written again at
        # every logging step of the epoch.
        if self._last is None or (logs_this_step(trainer) and value != self._last):
            # A host tensor: Lightning would copy a Python number to the module's device (a blocking copy on an
            # accelerator), and the progress bar reads it back at every refresh.
            pl_module.log(self.key, torch.tensor(float(value)), prog_bar=self.prog_bar, on_step=True, on_epoch=False)
            self._last = value


class ScheduledAttribute(Callback):
    """Base of the callbacks that set one module attribute from a :class:`Schedule` before every training batch.

    Subclasses name the attribute (``attribute``, one of the :class:`~lightning_vae.protocols.Annealable`
    protocol's) and the logged key (``log_key``). The value is logged for every step with ``on_step=True``
    (through :class:`StepValueLogger`); a module that logs the same key itself (``VAE`` logs
    ``train/beta`` and ``train/free_bits``) logs the same number.

    Args:
        schedule: The value at each step (or epoch).
        interval: ``"step"`` or ``"epoch"``: what the schedule counts.
        prog_bar: Show the value in the progress bar.

    Raises:
        ValueError: For an unknown interval.
        TypeError: For a ``prog_bar`` that is not a bool; at ``setup``, for a module without the attribute.
    """

    attribute: str = ""
    log_key: str = ""

    def __init__(self, schedule: Schedule, interval: Interval = "step", prog_bar: bool = False) -> None:
        super().__init__()
        self.schedule = schedule
        self.interval: Interval = check_choice("interval", interval, Interval)
        self.prog_bar: bool = check_type("prog_bar", prog_bar, bool, "a bool")
        self._logger = StepValueLogger(self.log_key, prog_bar)

    def value_at(self, trainer: Trainer) -> float:
        """The scheduled value for the trainer's current optimizer step (or epoch, with ``interval="epoch"``)."""
        return self.schedule(trainer.global_step if self.interval == "step" else epoch_of_step(trainer))

    def check_module(self, pl_module: LightningModule) -> None:
        """Check that ``pl_module`` keeps the part of the annealing protocol this callback writes (or that its
        objective declares the weight)."""
        if self.attribute in getattr(getattr(pl_module, "objective", None), "weights", ()):
            return
        require(pl_module, Annealable, type(self).__name__, members=(self.attribute,))

    def apply(self, trainer: Trainer, pl_module: LightningModule) -> float:
        """Set the module attribute (or the objective's declared weight) for the current step and return the value."""
        value = self.value_at(trainer)
        setattr(weight_owner(pl_module, self.attribute), self.attribute, value)
        return value

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_module(pl_module)
            if self.schedule.kind == "constant":  # one value for the whole run: the run's hyperparameter says it
                record_hparam(pl_module, self.attribute, self.schedule(0))

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


def weight_owner(pl_module: Any, name: str) -> Any:
    """What holds the weight ``name``: the module when it has the attribute, else its objective when that declares it.

    Example::

        >>> from lightning_vae import VAE
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> vae = VAE(MLPEncoder((4,), latent_dim=2), MLPDecoder(2, (4,)))
        >>> weight_owner(vae, "beta") is vae
        True
    """
    if hasattr(pl_module, name):
        return pl_module
    objective = getattr(pl_module, "objective", None)
    if name in getattr(objective, "weights", ()):
        return objective
    return pl_module


__all__ = ["Interval", "ScheduledAttribute", "StepValueLogger", "epoch_of_step", "weight_owner"]
