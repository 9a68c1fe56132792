"""``TargetRate``: a controller that moves β up or down to hold the KL (the rate) near a target.

This is the "soft free bits" of Chen et al. (2017, "Variational Lossy Autoencoder", appendix):
instead of clamping the KL at λ, the weight of the KL term is adjusted multiplicatively after every
optimizer step, lowered while the KL is under the target and raised while it is above, so the KL
settles at the target without the zero gradient of hard free bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_vae.callbacks.scheduled import StepValueLogger
from lightning_vae.checks import check_float, check_int, check_type
from lightning_vae.protocols import Annealable, require

#: Updates in a row with β at a bound and the KL outside the target band before TargetRate warns.
PINNED_UPDATES = 100


class TargetRate(Callback):
    """Hold the KL near ``target`` nats by adjusting ``pl_module.beta`` (soft free bits, Chen et al. 2017).

    After every ``update_every``-th optimizer step the KL of that step, read from the ``"kl"`` entry of
    what ``training_step`` returned (``VAE`` returns ``{"loss", "kl"}``) or else from
    ``trainer.callback_metrics[monitor]``, and averaged over all DDP ranks (so every rank makes the
    same decision and keeps the same β), moves β:

    - ``KL > target + tolerance``: ``β ← min(β · (1 + step_size), beta_max)``;
    - ``KL < target − tolerance``: ``β ← max(β · (1 − step_size), beta_min)``;
    - otherwise β is left alone (the tolerance is a dead band against chattering).

    β stays within ``[beta_min, beta_max]``: with the default ``beta_max=1.0`` a KL above the target can only be
    pushed down while β is below 1. When β has sat at a bound for 100 updates in a row while the KL stays on the
    wrong side of the band, the callback warns once and names the bound to move.

    β changes by at most a factor ``1 ± step_size`` per update, so going from 1 to 0.1 takes
    ``log(10) / step_size`` updates (230 with the default 0.01). β is the only state that cannot be
    derived from the step counter: it is saved in the checkpoint and restored on resume.
    ``train/beta`` is logged for every step the loggers record and shown in the progress bar. Reading
    the KL costs one host synchronisation (and one all-reduce under DDP) per update; raise
    ``update_every`` to amortise it on accelerators.

    Args:
        target: Target KL (rate) in nats per example.
        step_size: ε, the relative change of β per update, in (0, 1).
        tolerance: Half-width of the dead band around the target, in nats (>= 0).
        beta_init: β at the start of training; ``None`` takes the module's β (clipped to
            ``[beta_min, beta_max]``).
        beta_min: Lower bound of β (> 0: a multiplicative update cannot leave 0).
        beta_max: Upper bound of β.
        monitor: The logged key that holds the KL of the step, for modules whose ``training_step`` does not
            return a ``"kl"`` entry (it must then be logged at every step).
        update_every: Optimizer steps between updates.
        prog_bar: Show ``train/beta`` in the progress bar.

    Raises:
        ValueError: For numbers out of range or not finite (the message names the argument).
        TypeError: For an argument of the wrong type; at ``setup``, if the module has no ``beta`` attribute.
        RuntimeError: If neither a ``"kl"`` output nor ``monitor`` is available at an update (the message lists
            the logged keys).

    Example::

        >>> cb = TargetRate(target=5.0, step_size=0.05, tolerance=0.2)
        >>> cb.next_beta(1.0, kl=9.0), cb.next_beta(1.0, kl=5.1), cb.next_beta(1.0, kl=1.0)
        (1.0, 1.0, 0.95)
        >>> cb.next_beta(0.5, kl=9.0)
        0.525
    """

    def __init__(
        self,
        target: float,
        step_size: float = 0.01,
        tolerance: float = 0.1,
        beta_init: float | None = None,
        beta_min: float = 1e-3,
        beta_max: float = 1.0,
        monitor: str = "train/kl",
        update_every: int = 1,
        prog_bar: bool = True,
    ) -> None:
        super().__init__()
        self.target = check_float("target", target, low=0.0)
        self.step_size = check_float("step_size", step_size, low=0.0, high=1.0, strict_low=True, strict_high=True)
        self.tolerance = check_float("tolerance", tolerance, low=0.0)
        self.beta_min = check_float("beta_min", beta_min, low=0.0, strict_low=True)
        self.beta_max = check_float("beta_max", beta_max, low=0.0, strict_low=True)
        if self.beta_min > self.beta_max:
            raise ValueError(f"Expected `beta_min` <= `beta_max`, got beta_min={beta_min!r}, beta_max={beta_max!r}")
        if beta_init is not None:
            beta_init = check_float("beta_init", beta_init, low=0.0, strict_low=True)
            if not self.beta_min <= beta_init <= self.beta_max:
                raise ValueError(
                    f"Expected `beta_init` in [beta_min, beta_max] = [{beta_min}, {beta_max}], got {beta_init!r}"
                )
        self.beta_init = beta_init
        if not check_type("monitor", monitor, str, "the name of a logged value"):
            raise ValueError(f"Expected `monitor` to be the non-empty name of a logged value, got {monitor!r}")
        self.monitor = monitor
        self.update_every = check_int("update_every", update_every, low=1)
        self.prog_bar = bool(prog_bar)
        self._logger = StepValueLogger("train/beta", self.prog_bar)
        self.beta: float | None = None  # restored from a checkpoint, or set at the start of training
        self.updates = 0
        self._step_at_batch_start = -1
        self._pinned, self._told = 0, False  # updates in a row with β at a bound and the KL outside the band

    def next_beta(self, beta: float, kl: float) -> float:
        """The β after one update from ``beta`` given the KL of the step (a pure function of its inputs)."""
        if kl > self.target + self.tolerance:
            return min(beta * (1.0 + self.step_size), self.beta_max)
        if kl < self.target - self.tolerance:
            return max(beta * (1.0 - self.step_size), self.beta_min)
        return beta

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            require(pl_module, Annealable, type(self).__name__, members=("beta",))

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.beta is None:  # a fresh run; a resumed one has its β from load_state_dict
            start = self.beta_init if self.beta_init is not None else float(getattr(pl_module, "beta"))  # noqa: B009
            self.beta = min(max(start, self.beta_min), self.beta_max)
            rank_zero_info(f"TargetRate: β starts at {self.beta:g}, target KL {self.target:g} nats")
        setattr(pl_module, "beta", self.beta)  # noqa: B010 - a protocol attribute of any module
        self._logger.reset()

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._logger.reset()

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        assert self.beta is not None
        setattr(pl_module, "beta", self.beta)  # noqa: B010 - a protocol attribute of any module
        self._step_at_batch_start = trainer.global_step
        self._logger(trainer, pl_module, self.beta)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Only after a batch that stepped the optimizer (not while gradients accumulate), every update_every steps.
        if trainer.global_step == self._step_at_batch_start or trainer.global_step % self.update_every:
            return
        if isinstance(outputs, Mapping) and "kl" in outputs:  # this step's KL, returned by training_step
            value = outputs["kl"]
        else:
            metrics = trainer.callback_metrics
            if self.monitor not in metrics:
                raise RuntimeError(
                    f"TargetRate reads the KL from the training step's output (a dict with a 'kl' entry) or the "
                    f"logged value {self.monitor!r}, and found neither; logged: {sorted(metrics)}. Return "
                    "{'loss': ..., 'kl': ...} from training_step, log the KL every step, or set `monitor`"
                )
            value = metrics[self.monitor]
        kl = torch.as_tensor(value, dtype=torch.float32).detach().reshape(()).clone()
        kl = trainer.strategy.reduce(kl.to(pl_module.device), reduce_op="mean")
        assert self.beta is not None
        self.beta = self.next_beta(self.beta, float(kl))
        self.updates += 1
        setattr(pl_module, "beta", self.beta)  # noqa: B010 - a protocol attribute of any module
        self._watch_bounds(float(kl))

    def _watch_bounds(self, kl: float) -> None:
        """Warn once when β sits at ``beta_max`` (``beta_min``) while the KL stays above (below) the target band."""
        high, low = kl > self.target + self.tolerance, kl < self.target - self.tolerance
        pinned = (high and self.beta == self.beta_max) or (low and self.beta == self.beta_min)
        self._pinned = self._pinned + 1 if pinned else 0
        if self._pinned < PINNED_UPDATES or self._told:
            return
        self._told = True
        bound, name, way = (self.beta_max, "beta_max", "raise") if high else (self.beta_min, "beta_min", "lower")
        rank_zero_warn(
            f"TargetRate: β has been held at {name}={bound:g} for {self._pinned} updates while the KL ({kl:.3g} nats) "
            f"stays {'above' if high else 'below'} the target {self.target:g} ± {self.tolerance:g}: {name} caps β, "
            f"so the KL cannot reach the target. {way.capitalize()} `{name}` (e.g. TargetRate(target={self.target:g}, "
            f"{name}={bound * 10 if high else bound / 10:g})) to let β move the KL to the target."
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "updates": self.updates}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        beta = state_dict.get("beta")
        self.beta = None if beta is None else float(beta)
        self.updates = int(state_dict.get("updates", 0))


__all__ = ["TargetRate"]
