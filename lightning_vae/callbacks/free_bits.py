"""``FreeBits``: λ (nats) of free bits, its mode, and an optional schedule of λ, set on any annealable module.

Free bits here always mean Kingma et al. (2016): the KL of each latent dimension (``"dim"``), of
each group of dimensions (``"group"``), of each latent group of the model (``"latent_group"``) or the
total KL (``"total"``) is averaged over the batch *before* ``max(λ, ·)``, so a dimension (group) whose
batch-averaged KL is under λ contributes a constant and gets no gradient from the KL term. The clamp itself lives in
:func:`lightning_vae.objective.free_bits_penalty`; this callback only sets the module's attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_vae.callbacks.scheduled import Interval, ScheduledAttribute
from lightning_vae.checks import check_choice, check_float, check_int, check_single_sample
from lightning_vae.functional.schedules import CycleShape, Schedule, ScheduleName
from lightning_vae.objective import FreeBitsMode
from lightning_vae.protocols import SupportsFreeBitsMode, require


class FreeBits(ScheduledAttribute):
    """Set free bits λ (and optionally the free-bits mode) on the module, constant or on a schedule.

    Before every training batch ``pl_module.free_bits`` is set to λ at ``trainer.global_step`` (or
    the epoch) and ``train/free_bits`` is logged. λ is constant by default; give ``schedule`` and
    ``end`` to move it, e.g. ``schedule="linear", end=0.0`` decays it to 0 over ``length`` steps.

    ``mode`` and ``groups``, when given, are written once at ``setup`` to the module's
    ``free_bits_mode`` and ``free_bits_groups`` (``None`` keeps the module's own). The raw KL,
    before free bits, is what ``VAE`` logs as ``train/kl``; for a module whose ``training_step``
    returns a mapping with a ``"kl"`` entry, this callback logs that entry as ``train/kl``.

    Args:
        free_bits: λ in nats per latent dimension (``"dim"``), per group (``"group"``), per latent group of
            the model (``"latent_group"``) or in total
            (``"total"``); the value at the start of the schedule.
        mode: ``"dim"`` (Kingma et al. 2016), ``"group"``, ``"total"`` or ``"latent_group"``
            (:data:`~lightning_vae.objective.FreeBitsMode`); ``None`` keeps the module's.
        groups: Number of equal groups of latent dimensions for ``mode="group"``; ``None`` keeps the module's.
        schedule: ``"constant"`` (default) or a schedule of λ: ``"linear"``, ``"logistic"``, ``"cosine"``,
            ``"cyclical"`` (see :class:`~lightning_vae.callbacks.KLAnnealing`).
        end: λ at the end of the schedule (required unless ``schedule="constant"``).
        length: Length of the schedule in steps (epochs).
        delay: Steps (epochs) held at ``free_bits`` first.
        interval: ``"step"`` (default) or ``"epoch"``.
        n_cycles: Cycles of the cyclical schedule.
        ratio: Fraction of each cycle spent moving from ``free_bits`` to ``end``.
        cycle_shape: ``"linear"``, ``"sigmoid"`` or ``"cosine"``.
        steepness: ``k`` of the logistic schedule.
        midpoint: ``t0`` of the logistic schedule.
        log_kl: Log ``train/kl`` from a ``"kl"`` entry of the training step's output, when there is one.
        prog_bar: Show ``train/free_bits`` in the progress bar.

    Raises:
        ValueError: For a negative or non-finite λ, an unknown mode, a group count below 1, ``end`` missing
            for a schedule (or given with ``"constant"``); at ``setup``, for a module that trains with
            several importance samples (:func:`~lightning_vae.checks.check_single_sample`).
        TypeError: For an argument of the wrong type; at ``setup``, if the module has no ``free_bits``
            attribute, or no ``free_bits_mode`` / ``free_bits_groups`` when ``mode`` / ``groups`` are given.

    Example::

        >>> cb = FreeBits(0.5, mode="dim", schedule="linear", end=0.0, length=1000)
        >>> cb.schedule(0), cb.schedule(500), cb.schedule(1000)
        (0.5, 0.25, 0.0)
    """

    attribute = "free_bits"
    log_key = "train/free_bits"

    def __init__(
        self,
        free_bits: float = 0.5,
        mode: FreeBitsMode | None = None,
        groups: int | None = None,
        schedule: ScheduleName = "constant",
        end: float | None = None,
        length: int = 10_000,
        delay: int = 0,
        interval: Interval = "step",
        n_cycles: int = 4,
        ratio: float = 0.5,
        cycle_shape: CycleShape = "linear",
        steepness: float | None = None,
        midpoint: float | None = None,
        log_kl: bool = True,
        prog_bar: bool = False,
    ) -> None:
        free_bits = check_float("free_bits", free_bits, low=0.0)
        if mode is not None:
            check_choice("mode", mode, FreeBitsMode)
        if groups is not None:
            check_int("groups", groups, low=1)
        if schedule == "constant":
            if end is not None:
                raise ValueError(f"Expected `end` to be None with schedule='constant' (λ = free_bits), got {end!r}")
            end = free_bits
        elif end is None:
            raise ValueError(f"Expected `end` (the final λ in nats) for schedule={schedule!r}, got None")
        end = check_float("end", end, low=0.0)
        self.mode: FreeBitsMode | None = mode
        self.groups = groups
        self.log_kl = bool(log_kl)
        super().__init__(
            Schedule(schedule, free_bits, end, length, delay, n_cycles, ratio, cycle_shape, steepness, midpoint),
            interval=interval,
            prog_bar=prog_bar,
        )

    @override
    def check_module(self, pl_module: LightningModule) -> None:
        super().check_module(pl_module)
        settings = (("free_bits_mode", self.mode), ("free_bits_groups", self.groups))
        asked = tuple(name for name, value in settings if value is not None)
        require(pl_module, SupportsFreeBitsMode, type(self).__name__, members=asked)
        if self.schedule.high > 0:
            check_single_sample(getattr(pl_module, "n_samples", 1), type(self).__name__)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if self.mode is not None:
            setattr(pl_module, "free_bits_mode", self.mode)  # noqa: B010 - a protocol attribute of any module
        if self.groups is not None:
            setattr(pl_module, "free_bits_groups", self.groups)  # noqa: B010

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.log_kl and isinstance(outputs, Mapping) and isinstance(outputs.get("kl"), Tensor):
            pl_module.log("train/kl", outputs["kl"].detach().float().mean(), on_step=True, on_epoch=False)


__all__ = ["FreeBits"]
