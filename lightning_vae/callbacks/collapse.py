"""``PosteriorCollapseMonitor``: active units, I(x; z) and KL per dimension at every validation; warns on collapse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.distributions import Distribution
from typing_extensions import override

from lightning_vae.checks import check_float, check_int
from lightning_vae.functional.collapse import ACTIVITY_THRESHOLD, KL_THRESHOLD, count_collapsed, kl_to_standard_normal
from lightning_vae.metrics.collapse import ActiveUnits, KLPerDimension, MutualInformation
from lightning_vae.metrics.nll import ImportanceWeightedNLL
from lightning_vae.protocols import SupportsLogJoint, require
from lightning_vae.utilities import batch_data
from lightning_vae.viz import ViewWriter, colorize, kl_heatmap, kl_heatmap_caption


class PosteriorCollapseMonitor(Callback):
    """Watch the posterior for collapse at the end of every validation and test run.

    Reads what ``validation_step`` / ``test_step`` return (the monitor protocol of docs/architecture.md): a
    mapping with ``"posterior"`` (a distribution with ``.mean`` and ``.variance``, event shape
    ``(D,)``), ``"z"`` (one sample per example, ``(B, D)`` or ``(1, B, D)``) and optionally
    ``"kl_per_dim"`` (the batch-averaged KL of each dimension, ``(D,)``; computed against the
    standard normal from the posterior's mean and variance when absent or ``None``). Any
    LightningModule that returns this works, not only ``VAE``.

    Logged at the end of each run (the same numbers on one process and under DDP, since the
    statistics are torchmetrics states reduced over processes):

    - ``collapse/active_units``: dimensions whose posterior mean varies over the data by more than
      ``activity_threshold`` (Burda et al. 2015), over the whole evaluation set;
    - ``collapse/mutual_info``: I(x; z) under q in nats (He et al. 2019; within-batch estimate, at
      most log of the batch size);
    - ``collapse/collapsed_dims``: dimensions with a data-averaged KL below ``kl_threshold``;
    - ``collapse/nll_iw``: the importance-weighted NLL with ``iw_samples`` samples, when above 0
      (the module then needs ``encode(x)`` and ``log_joint(x, z)``);
    - ``collapse/kl_per_dim``: the KL of each dimension, as a histogram in TensorBoard, a bar chart
      image for loggers that take images (W&B's ``log_image``, MLflow, Comet), and a row of
      ``<log folder>/collapse/kl_per_dim.csv`` (``stage, step, KL of dimension 0, 1, ...``) for the
      others (``CSVLogger``) or without a logger;
    - ``collapse/kl_per_dim_heatmap``: an image of the KL of every dimension over the validation
      checks so far (dark is unused, bright is used), with a caption that reads it; a PNG file
      ``collapse/kl_per_dim_heatmap/step_<step>.png`` for loggers without images (see
      :class:`~lightning_vae.viz.ViewWriter`).

    A validation check shows collapse when fewer than ``min_active_units`` units are active or
    the mutual information is below ``min_mutual_info`` nats. After ``patience`` such checks in a
    row the monitor warns once (on rank zero) with what it saw and the remedies of this suite, and
    with ``stop_on_collapse`` stops training (a decision reduced across processes). The sanity
    check does not count.

    Args:
        activity_threshold: Variance of the posterior mean above which a unit is active.
        kl_threshold: KL in nats under which a dimension counts as collapsed.
        min_active_units: A check with fewer active units shows collapse.
        min_mutual_info: A check with I(x; z) below this (nats) shows collapse.
        patience: Checks in a row that must show collapse before it is reported.
        stop_on_collapse: Stop training once collapse is reported.
        iw_samples: Importance samples for ``collapse/nll_iw``; 0 turns it off (it costs ``k``
            decoder passes per example).
        iw_chunk_size: Most (sample, example) pairs decoded at once for the NLL.
        log_images: Log the KL per dimension and the heat map (to every logger, as above).

    Raises:
        ValueError: For negative or non-finite thresholds, negative counts or a ``patience`` below 1.
        TypeError: For arguments of the wrong type; at the start of a validation or test run with
            ``iw_samples > 0``, for a module without ``encode`` and ``log_joint``
            (:class:`~lightning_vae.protocols.SupportsLogJoint`).

    Example::

        >>> from lightning.pytorch import Trainer
        >>> monitor = PosteriorCollapseMonitor(min_active_units=2, patience=2, stop_on_collapse=True)
        >>> trainer = Trainer(callbacks=[monitor], logger=False, enable_progress_bar=False)
    """

    def __init__(
        self,
        activity_threshold: float = ACTIVITY_THRESHOLD,
        kl_threshold: float = KL_THRESHOLD,
        min_active_units: int = 1,
        min_mutual_info: float = 0.1,
        patience: int = 3,
        stop_on_collapse: bool = False,
        iw_samples: int = 0,
        iw_chunk_size: int = 10000,
        log_images: bool = True,
    ) -> None:
        super().__init__()
        self.activity_threshold = check_float("activity_threshold", activity_threshold, low=0.0)
        self.kl_threshold = check_float("kl_threshold", kl_threshold, low=0.0)
        self.min_active_units = check_int("min_active_units", min_active_units, low=0)
        self.min_mutual_info = check_float("min_mutual_info", min_mutual_info)
        self.patience = check_int("patience", patience, low=1)
        self.iw_samples = check_int("iw_samples", iw_samples, low=0)
        self.iw_chunk_size = check_int("iw_chunk_size", iw_chunk_size, low=1)
        self.stop_on_collapse = bool(stop_on_collapse)
        self.log_images = bool(log_images)
        self._out = ViewWriter("PosteriorCollapseMonitor")

        self.kl_per_dim = KLPerDimension()
        self.active_units = ActiveUnits(threshold=self.activity_threshold)
        self.mutual_info = MutualInformation()
        self.nll = ImportanceWeightedNLL(n_samples=max(self.iw_samples, 1), chunk_size=self.iw_chunk_size)

        # What cannot be derived from the trainer: the history for the heat map and the collapse streak.
        self.history: list[list[float]] = []
        self.history_steps: list[int] = []
        self.collapsed_checks = 0
        self.warned = False
        self.last: dict[str, float] = {}

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            activity_threshold=self.activity_threshold,
            kl_threshold=self.kl_threshold,
            min_active_units=self.min_active_units,
            min_mutual_info=self.min_mutual_info,
        )

    # ------------------------------------------------------------------ collection
    def _metrics(self) -> list[Any]:
        return [self.kl_per_dim, self.active_units, self.mutual_info, self.nll]

    def _start(self, pl_module: LightningModule) -> None:
        for metric in self._metrics():
            metric.reset()
            metric.to(pl_module.device)
        if self.iw_samples:
            require(pl_module, SupportsLogJoint, f"PosteriorCollapseMonitor(iw_samples={self.iw_samples})")

    def _update(self, pl_module: LightningModule, outputs: Any, batch: Any, stage: str) -> None:
        if not isinstance(outputs, Mapping) or not isinstance(outputs.get("posterior"), Distribution):
            got = (
                type(outputs).__name__ if not isinstance(outputs, Mapping) else f"a mapping with keys {sorted(outputs)}"
            )
            raise TypeError(
                f"PosteriorCollapseMonitor expects {stage}_step to return a mapping with 'posterior' (a "
                f"torch Distribution over z) and 'z' (samples), got {got}"
            )
        posterior: Distribution = outputs["posterior"]
        mean, variance = posterior.mean.detach(), posterior.variance.detach()
        if mean.dim() != 2:
            raise ValueError(
                f"Expected the posterior to have batch shape (B,) and event shape (D,), got mean {tuple(mean.shape)}"
            )
        kl = outputs.get("kl_per_dim")
        if kl is not None:
            self.kl_per_dim.update(kl.detach(), batch_size=mean.shape[0])
        else:
            self.kl_per_dim.update(kl_to_standard_normal(mean, variance))
        self.active_units.update(mean)
        z = outputs.get("z")
        if isinstance(z, Tensor) and z.dim() == 3:
            z = z[0]
        self.mutual_info.update(posterior, z.detach() if isinstance(z, Tensor) else None)
        if self.iw_samples:
            self.nll.update(pl_module, batch_data(pl_module, batch))

    def _finish(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any] | None:
        if not self.kl_per_dim.update_called:
            return None
        kl_per_dim = self.kl_per_dim.compute().float()
        values: dict[str, Any] = {
            "active_units": int(self.active_units.compute()),
            "mutual_info": float(self.mutual_info.compute()),
            "collapsed_dims": int(count_collapsed(kl_per_dim, self.kl_threshold)),
            "latent_dim": int(kl_per_dim.numel()),
            "kl_per_dim": kl_per_dim.cpu(),
        }
        # The values are already reduced over processes (equal on every rank); sync_dist only keeps Lightning quiet.
        for name in ("active_units", "mutual_info", "collapsed_dims"):
            pl_module.log(f"collapse/{name}", float(values[name]), sync_dist=True)
        if self.iw_samples:
            values["nll_iw"] = float(self.nll.compute())
            pl_module.log("collapse/nll_iw", values["nll_iw"], sync_dist=True)
        self.last = {k: v for k, v in values.items() if not isinstance(v, Tensor)}
        return values

    # ------------------------------------------------------------------ hooks
    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(pl_module)

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(pl_module)

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update(pl_module, outputs, batch, "validation")

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update(pl_module, outputs, batch, "test")

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = self._finish(trainer, pl_module)
        if values is None or trainer.sanity_checking:
            return
        self.history.append(values["kl_per_dim"].tolist())
        self.history_steps.append(trainer.global_step)
        self._log_views(trainer, values["kl_per_dim"])
        self._check(trainer, values)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = self._finish(trainer, pl_module)
        if values is not None:
            self._log_views(trainer, values["kl_per_dim"], heatmap=False)

    # ------------------------------------------------------------------ decisions and views
    def _shows_collapse(self, values: Mapping[str, Any]) -> bool:
        return values["active_units"] < self.min_active_units or values["mutual_info"] < self.min_mutual_info

    def _check(self, trainer: Trainer, values: Mapping[str, Any]) -> None:
        self.collapsed_checks = self.collapsed_checks + 1 if self._shows_collapse(values) else 0
        detected = self.collapsed_checks >= self.patience
        if detected and not self.warned:
            self.warned = True
            rank_zero_warn(self._message(values), category=UserWarning)
        if self.stop_on_collapse:
            should_stop = trainer.strategy.reduce_boolean_decision(detected, all=False)
            trainer.should_stop = trainer.should_stop or should_stop

    def _message(self, values: Mapping[str, Any]) -> str:
        d = values["latent_dim"]
        return (
            f"Posterior collapse: for {self.collapsed_checks} validation checks in a row the posterior carried "
            f"almost no information about x. Last check: {values['active_units']}/{d} active units "
            f"(posterior-mean variance > {self.activity_threshold:g}; collapse below {self.min_active_units}), "
            f"I(x; z) = {values['mutual_info']:.3f} nats (collapse below {self.min_mutual_info:g}), "
            f"{values['collapsed_dims']}/{d} dimensions with KL < {self.kl_threshold:g} nats. Remedies in "
            "lightning-vae: free bits (VAE(free_bits=...) or the FreeBits callback), cyclical KL annealing (the "
            "KLAnnealing callback), aggressive encoder training (the AggressiveEncoderTraining callback); a weaker "
            "decoder also helps." + (" Stopping training (stop_on_collapse=True)." if self.stop_on_collapse else "")
        )

    def _log_views(self, trainer: Trainer, kl_per_dim: Tensor, heatmap: bool = True) -> None:
        if not self.log_images or not trainer.is_global_zero:
            return
        stage = "validate" if heatmap else "test"
        self._out.values(trainer, "collapse/kl_per_dim", kl_per_dim, trainer.global_step, stage=stage)
        if heatmap and self.history:
            image, vmax = kl_heatmap(torch.tensor(self.history))
            caption = (
                kl_heatmap_caption(kl_per_dim.numel(), self.history_steps, vmax)
                + f"; dimensions under {self.kl_threshold:g} nats count as collapsed."
            )
            self._out.image(trainer, "collapse/kl_per_dim_heatmap", image, trainer.global_step, caption=caption)

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(h) for h in self.history],
            "history_steps": list(self.history_steps),
            "collapsed_checks": self.collapsed_checks,
            "warned": self.warned,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [list(h) for h in state_dict.get("history", [])]
        self.history_steps = list(state_dict.get("history_steps", []))
        self.collapsed_checks = int(state_dict.get("collapsed_checks", 0))
        self.warned = bool(state_dict.get("warned", False))


__all__ = ["PosteriorCollapseMonitor", "colorize", "kl_heatmap"]
