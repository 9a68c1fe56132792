"""KL annealing callbacks: β from a schedule (``KLAnnealing``) and the capacity objective (``CapacityAnnealing``).

Both work on any LightningModule that keeps the annealing protocol
(:class:`~lightning_vae.protocols.Annealable`, docs/architecture.md): float attributes that its loss
reads at every step (``beta``; ``capacity`` and ``capacity_gamma`` for the capacity form). Values are
recomputed from the step counter before every training batch (:class:`ScheduledAttribute`).
"""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_vae.callbacks.scheduled import Interval, ScheduledAttribute, StepValueLogger, epoch_of_step
from lightning_vae.checks import check_float, check_single_sample, check_type
from lightning_vae.functional.schedules import CycleShape, Schedule, ScheduleName
from lightning_vae.protocols import SupportsCapacityGamma, SupportsGroupBetas, require


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
        group: Anneal only this latent group's KL weight (``pl_module.group_betas[group]``, logged as
            ``train/beta/<group>``) and leave β to the others; ``None`` anneals β for every group.
        weight: The weight to anneal (default ``"beta"``): an attribute of the module, or one the module's
            objective declares in its ``weights`` (e.g. ``"gamma"`` of a total-correlation objective); logged as
            ``train/<weight>``.

    Raises:
        ValueError: For an unknown schedule, shape or interval, or numbers out of range or not finite (the
            message names the argument); at ``setup``, for a group the model does not have.
        TypeError: For an argument of the wrong type; at ``setup``, if the module has no ``beta`` attribute (no
            ``group_betas`` with ``group``).

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
        group: str | None = None,
        weight: str = "beta",
    ) -> None:
        check_float("start", start, low=0.0)
        check_float("end", end, low=0.0)
        self.attribute = check_type("weight", weight, str, "the name of a weight")
        self.log_key = f"train/{weight}"
        self.group = None if group is None else check_type("group", group, str, "a latent group's name")
        if group is not None:
            if weight != "beta":
                raise ValueError(f"Expected `group` only with weight='beta', got weight={weight!r}")
            self.log_key = f"train/beta/{group}"
        super().__init__(
            Schedule(schedule, start, end, length, delay, n_cycles, ratio, cycle_shape, steepness, midpoint),
            interval=interval,
            prog_bar=prog_bar,
        )

    @override
    def check_module(self, pl_module: LightningModule) -> None:
        if self.group is None:
            super().check_module(pl_module)
            return
        require(pl_module, SupportsGroupBetas, type(self).__name__)
        names = getattr(getattr(pl_module, "model", None), "group_names", None)
        if names is not None and self.group not in names:
            raise ValueError(
                f"Expected `group` to be one of the model's latent groups {tuple(names)}, got {self.group!r}"
            )

    @override
    def apply(self, trainer: Trainer, pl_module: LightningModule) -> float:
        if self.group is None:
            return super().apply(trainer, pl_module)
        value = self.value_at(trainer)
        # A new dict: the module (or its objective) checks the weights where they are set.
        pl_module.group_betas = {**pl_module.group_betas, self.group: value}  # type: ignore[dict-item, assignment]
        return value


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
            objective, :func:`~lightning_vae.checks.check_single_sample`).
        TypeError: For an argument of the wrong type; at ``setup``, if the module has no ``capacity`` (or,
            with ``gamma`` set, no ``capacity_gamma``) attribute.

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
        check_float("c_max", c_max, low=0.0)
        check_float("c_start", c_start, low=0.0)
        self.gamma = None if gamma is None else check_float("gamma", gamma, low=0.0, strict_low=True)
        super().__init__(Schedule("linear", c_start, c_max, length, delay), interval=interval, prog_bar=prog_bar)

    @override
    def check_module(self, pl_module: LightningModule) -> None:
        super().check_module(pl_module)
        if self.gamma is not None:
            require(pl_module, SupportsCapacityGamma, type(self).__name__, members=("capacity_gamma",))
        check_single_sample(getattr(pl_module, "n_samples", 1), type(self).__name__)

    @override
    def apply(self, trainer: Trainer, pl_module: LightningModule) -> float:
        if self.gamma is not None:
            setattr(pl_module, "capacity_gamma", self.gamma)  # noqa: B010 - a protocol attribute of any module
        return super().apply(trainer, pl_module)


# The base, the step logger and the epoch count live in scheduled.py; their names stay importable from here.
__all__ = ["CapacityAnnealing", "Interval", "KLAnnealing", "ScheduledAttribute", "StepValueLogger", "epoch_of_step"]
