"""``PosteriorCollapseMonitor``: active units, I(x; z) and KL per dimension at every validation; warns on collapse."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric
from typing_extensions import override

from lightning_vae.callbacks.collapse_stats import GroupStatistics, collapse_message, read_groups, totals
from lightning_vae.checks import check_float, check_int
from lightning_vae.functional.collapse import ACTIVITY_THRESHOLD, KL_THRESHOLD
from lightning_vae.functional.nll import iw_nll
from lightning_vae.protocols import SupportsLogJoint, SupportsLogWeights, missing_members, require
from lightning_vae.utilities import batch_context, batch_data, logging_step
from lightning_vae.viz import ViewWriter, colorize, kl_heatmap, kl_heatmap_caption, labelled_heatmap


class PosteriorCollapseMonitor(Callback):
    """Watch the posterior for collapse at the end of every validation and test run, per latent group.

    Reads what ``validation_step`` / ``test_step`` return (the monitor protocol of docs/architecture.md):
    ``"groups"``, each group's ``{"posterior", "z", "kl_per_dim"}``, or at the top level the single group's
    ``"posterior"`` (batch shape ``(B,)``, event shape ``(D,)``), ``"z"`` (one sample per example, ``(B, D)`` or
    ``(1, B, D)``) and optionally ``"kl_per_dim"`` (``(D,)``, batch-averaged). Any LightningModule works.

    Logged at the end of each run (the same numbers on one process and under DDP: every statistic is a
    torchmetrics state reduced over processes, one set per group, created once the group names are known):

    - ``collapse/active_units``: dimensions whose posterior mean varies over the data by more than
      ``activity_threshold`` (Burda et al. 2015), over the whole evaluation set;
    - ``collapse/mutual_info``: I(x; z) under q in nats (He et al. 2019; within-batch estimate, at
      most log of the batch size);
    - ``collapse/collapsed_dims``: dimensions with a data-averaged KL below ``kl_threshold``;
    - with several groups, ``collapse/<group>/active_units``, ``collapse/<group>/mutual_info`` and
      ``collapse/<group>/collapsed_dims`` for each; the three keys above are then sums over the groups (the
      mutual information a sum of the groups' estimates, not I(x; z) of the joint);
    - ``collapse/nll_iw``: the importance-weighted NLL with ``iw_samples`` samples, when above 0
      (:func:`~lightning_vae.functional.nll.iw_nll`: over every group when the module has ``log_weights``);
    - ``collapse/kl_per_dim``: the KL of each dimension, as a histogram in TensorBoard, a bar chart
      image for loggers that take images (W&B's ``log_image``, MLflow, Comet), and a row of
      ``<log folder>/collapse/kl_per_dim.csv`` (``stage, step``, then one column per dimension, named
      ``<group>/<index>`` with several groups) for the others (``CSVLogger``) or without a logger;
    - ``collapse/kl_per_dim_heatmap``: an image of the KL of every dimension over the validation
      checks so far (dark is unused, bright is used; with several groups, a band per group with its name),
      with a caption that reads it; a PNG file ``collapse/kl_per_dim_heatmap/step_<step>.png`` for loggers
      without images (see :class:`~lightning_vae.viz.ViewWriter`).

    Where a quantity has no closed form the monitor says once per group which estimator it uses instead
    (:mod:`~lightning_vae.callbacks.collapse_stats`): a flow's active units from posterior means estimated with
    ``mc_samples`` draws; the collapsed dimensions, heat map and I(x; z) leave out a group without a per-dimension
    KL or a density at other examples' samples. A group conditioned on another's sample is read at that sample.

    A validation check shows collapse when fewer than ``min_active_units`` units are active or
    the mutual information is below ``min_mutual_info`` nats. After ``patience`` such checks in a
    row the monitor warns once (on rank zero) with what it saw and the remedies of this suite, and
    with ``stop_on_collapse`` stops training (a decision reduced across processes). A run that ends
    while its last checks show collapse, fewer of them than ``patience``, gets the warning at the end
    of training (a shortened run is not left collapsed in silence). The sanity check does not count.

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
        mc_samples: Draws per example for posterior means without a closed form (flows).

    Raises:
        ValueError: For negative or non-finite thresholds, negative counts, a ``patience`` below 1 or
            ``mc_samples`` below 2.
        TypeError: For arguments of the wrong type; at the start of a validation or test run with
            ``iw_samples > 0``, for a module with neither ``log_weights``
            (:class:`~lightning_vae.protocols.SupportsLogWeights`) nor ``encode`` and ``log_joint``
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
        mc_samples: int = 16,
    ) -> None:
        super().__init__()
        self.activity_threshold = check_float("activity_threshold", activity_threshold, low=0.0)
        self.kl_threshold = check_float("kl_threshold", kl_threshold, low=0.0)
        self.min_active_units = check_int("min_active_units", min_active_units, low=0)
        self.min_mutual_info = check_float("min_mutual_info", min_mutual_info)
        self.patience = check_int("patience", patience, low=1)
        self.iw_samples = check_int("iw_samples", iw_samples, low=0)
        self.iw_chunk_size = check_int("iw_chunk_size", iw_chunk_size, low=1)
        self.mc_samples = check_int("mc_samples", mc_samples, low=2)
        self.stop_on_collapse = bool(stop_on_collapse)
        self.log_images = bool(log_images)
        self._out = ViewWriter("PosteriorCollapseMonitor")

        #: The statistics of each latent group, in the model's order (top group first).
        self.groups: dict[str, GroupStatistics] = {}
        self.nll = MeanMetric(nan_strategy="disable")
        self.nll.set_dtype(torch.float64)

        # What cannot be derived from the trainer: the heat map's history (and its groups) and the collapse streak.
        self.history: list[list[float]] = []
        self.history_steps: list[int] = []
        self.history_groups: list[tuple[str, int]] | None = None
        self.collapsed_checks = 0
        self.warned = False
        self.last: dict[str, float] = {}
        self._last_check: Mapping[str, Any] | None = None  # the values of the last validation check, for the end

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
    def _group(self, name: str, device: torch.device | None = None) -> GroupStatistics:
        if name not in self.groups:
            self.groups[name] = GroupStatistics(name, not self.groups, self.activity_threshold, self.mc_samples)
            if device is not None:  # created after the module moved: place it there
                self.groups[name].start(device)
        return self.groups[name]

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        names = getattr(getattr(pl_module, "model", None), "group_names", None)
        if isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names):
            for name in names:
                self._group(name)

    def _start(self, pl_module: LightningModule) -> None:
        for stats in self.groups.values():
            stats.start(pl_module.device)
        self.nll.reset()
        self.nll.to(pl_module.device)
        if self.iw_samples and missing_members(pl_module, SupportsLogWeights):
            user = f"PosteriorCollapseMonitor(iw_samples={self.iw_samples})"
            try:
                require(pl_module, SupportsLogJoint, user)
            except TypeError as err:
                raise TypeError(
                    f"{err} Or give it `log_weights(x, n_samples)`, the importance weights of every latent group."
                ) from None

    def _update(self, pl_module: LightningModule, outputs: Any, batch: Any, stage: str) -> None:
        names = getattr(getattr(pl_module, "model", None), "group_names", None) or ("z",)
        for name, group in read_groups(outputs, stage, str(names[0])).items():
            self._group(name, pl_module.device).update(group)
        if self.iw_samples:
            x = batch_data(pl_module, batch)
            context = batch_context(pl_module, batch)  # a conditional model's: -log p(x | context)
            self.nll.update(
                iw_nll(pl_module, x, n_samples=self.iw_samples, chunk_size=self.iw_chunk_size, context=context)
            )

    def _finish(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any] | None:
        groups = {name: stats.compute(self.kl_threshold) for name, stats in self.groups.items() if stats.updated}
        if not groups:
            return None
        values = totals(groups)
        # Logged in the module's type (float64 for a float64 model, else float32; Lightning makes a Python number
        # float32). The values are already reduced over processes (equal on every rank); sync_dist only keeps
        # Lightning quiet, and needs them on the module's device.
        dtype = torch.float64 if pl_module.dtype == torch.float64 else torch.float32
        as_logged = partial(torch.tensor, dtype=dtype, device=pl_module.device)
        for key in ("active_units", "mutual_info", "collapsed_dims"):
            if values[key] is not None:
                pl_module.log(f"collapse/{key}", as_logged(values[key]), sync_dist=True)
            for name, group in groups.items() if len(groups) > 1 else ():
                if group[key] is not None:
                    pl_module.log(f"collapse/{name}/{key}", as_logged(group[key]), sync_dist=True)
                    values[f"{name}/{key}"] = group[key]
        if self.iw_samples:
            values["nll_iw"] = float(self.nll.compute())
            pl_module.log("collapse/nll_iw", as_logged(values["nll_iw"]), sync_dist=True)
        self.last = {k: v for k, v in values.items() if isinstance(v, (int, float))}
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
        if values["kl_per_dim"] is not None:
            size, layout = values["kl_per_dim"].numel(), values["kl_groups"]
            if self.history and (len(self.history[0]) != size or self.history_groups not in (None, layout)):
                self.history, self.history_steps = [], []  # other latent groups than the history's: start again
            self.history.append(values["kl_per_dim"].tolist())
            self.history_steps.append(logging_step(trainer))
            self.history_groups = values["kl_groups"]
        self._log_views(trainer, values)
        self._check(trainer, values)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.warned or not self.collapsed_checks or self._last_check is None:
            return
        self.warned = True
        rank_zero_warn(collapse_message(self, self._last_check, at_end=True), category=UserWarning)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = self._finish(trainer, pl_module)
        if values is not None:
            self._log_views(trainer, values, heatmap=False)

    # ------------------------------------------------------------------ decisions and views
    def _shows_collapse(self, values: Mapping[str, Any]) -> bool:
        low_mi = values["mutual_info"] is not None and values["mutual_info"] < self.min_mutual_info
        return values["active_units"] < self.min_active_units or low_mi

    def _check(self, trainer: Trainer, values: Mapping[str, Any]) -> None:
        self._last_check = values
        self.collapsed_checks = self.collapsed_checks + 1 if self._shows_collapse(values) else 0
        detected = self.collapsed_checks >= self.patience
        if detected and not self.warned:
            self.warned = True
            rank_zero_warn(collapse_message(self, values), category=UserWarning)
        if self.stop_on_collapse:
            should_stop = trainer.strategy.reduce_boolean_decision(detected, all=False)
            trainer.should_stop = trainer.should_stop or should_stop

    def _log_views(self, trainer: Trainer, values: Mapping[str, Any], heatmap: bool = True) -> None:
        kl_per_dim, layout = values["kl_per_dim"], values["kl_groups"]
        if not self.log_images or not trainer.is_global_zero or kl_per_dim is None:
            return
        stage = "validate" if heatmap else "test"
        names = None if len(layout) == 1 else [f"{name}/{i}" for name, size in layout for i in range(size)]
        step = logging_step(trainer)  # the step of this run's scalars (`collapse/active_units`, `val/loss`, ...)
        self._out.values(trainer, "collapse/kl_per_dim", kl_per_dim, step, stage=stage, names=names)
        if heatmap and self.history:
            groups = None if len(layout) == 1 else layout
            image, vmax = kl_heatmap(torch.tensor(self.history), groups=groups)
            caption = (
                kl_heatmap_caption(kl_per_dim.numel(), self.history_steps, vmax, groups=groups)
                + f"; dimensions under {self.kl_threshold:g} nats count as collapsed."
            )
            # PNG files (CSVLogger, no logger) are read alone: they get the map with its axes and scale written on it.
            labelled = labelled_heatmap(image, kl_per_dim.numel(), self.history_steps, vmax) if groups is None else None
            self._out.image(trainer, "collapse/kl_per_dim_heatmap", image, step, caption=caption, file_image=labelled)

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(h) for h in self.history],
            "history_steps": list(self.history_steps),
            "history_groups": None if self.history_groups is None else [list(g) for g in self.history_groups],
            "collapsed_checks": self.collapsed_checks,
            "warned": self.warned,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [list(h) for h in state_dict.get("history", [])]
        self.history_steps = list(state_dict.get("history_steps", []))
        groups = state_dict.get("history_groups")
        self.history_groups = None if groups is None else [(str(n), int(s)) for n, s in groups]
        self.collapsed_checks = int(state_dict.get("collapsed_checks", 0))
        self.warned = bool(state_dict.get("warned", False))


__all__ = ["PosteriorCollapseMonitor", "colorize", "kl_heatmap"]
