"""``KLDecompositionMonitor``: the KL term taken apart at every validation, over the whole validation set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal
from typing_extensions import override

from lightning_vae.callbacks.tensorboard import TensorBoardDashboard
from lightning_vae.callbacks.views import first_sample
from lightning_vae.checks import check_int, check_type
from lightning_vae.functional.kl_decomposition import CHUNK_SIZE
from lightning_vae.metrics.kl_decomposition import PARTS, KLDecomposition
from lightning_vae.viz import find_tensorboard_logger

#: The CUSTOM SCALARS chart of the decomposition: category -> chart title -> tag regexes.
LAYOUT: dict[str, dict[str, list[str]]] = {
    "KL decomposition": {
        "KL(q(z|x) || p(z)) = I(x; z) + TC + dimension-wise KL (nats)": [
            r"kl_decomposition/mutual_info$",
            r"kl_decomposition/total_correlation$",
            r"kl_decomposition/dimension_kl$",
            r"kl_decomposition/kl$",
        ]
    }
}


def _diagonal_gaussian(posterior: Any) -> tuple[Tensor, Tensor] | None:
    """``(loc, log_var)`` of a diagonal Gaussian over vectors (``Independent(Normal, 1)``), else ``None``."""
    if not (
        isinstance(posterior, Independent)
        and isinstance(posterior.base_dist, Normal)
        and posterior.reinterpreted_batch_ndims == 1
    ):
        return None
    log_var = getattr(posterior, "log_var", None)
    if not isinstance(log_var, Tensor):
        log_var = 2 * posterior.base_dist.scale.log()
    loc = posterior.base_dist.loc
    return loc.expand_as(log_var), log_var


def module_prior(pl_module: LightningModule) -> Distribution | None:
    """The prior of the first latent group: the model's ``prior_distribution()`` or ``top_prior(device)``; ``None``
    when the model gives neither (the monitor then takes the standard normal)."""
    model = getattr(pl_module, "model", None)
    with torch.no_grad():
        if callable(getattr(model, "prior_distribution", None)):
            return model.prior_distribution()  # type: ignore[union-attr]
        if callable(getattr(model, "top_prior", None)):
            return model.top_prior(pl_module.device)  # type: ignore[union-attr]
    return None


class KLDecompositionMonitor(Callback):
    """Log the three parts of the average KL of the validation set's aggregate posterior at every validation.

    With ``q(z) = 1/N sum_n q(z|x_n)`` over the ``N`` validation examples and a factorised prior (Hoffman & Johnson
    2016; Chen et al. 2018):

    - ``kl_decomposition/mutual_info``: the index-code mutual information ``I(x; z)`` under ``q``;
    - ``kl_decomposition/total_correlation``: ``KL(q(z) || prod_j q(z_j))``;
    - ``kl_decomposition/dimension_kl``: ``sum_j KL(q(z_j) || p(z_j))``;
    - ``kl_decomposition/kl``: their sum, the average ``KL(q(z|x) || p(z))`` (what ``val/kl`` reports for a
      single-group model).

    ``q(z)`` is summed exactly over every posterior of the set (in chunks of at most ``chunk_size`` elements); the
    expectations over ``q(z)`` are averages over the validation step's samples ``z`` (one per example, at most
    ``max_points`` of them), the rest is in closed form (:class:`~lightning_vae.metrics.KLDecomposition`): the sum
    is exact, each part carries a Monte Carlo error (a part near 0 can come out slightly negative). Under
    DDP the posteriors and samples of every process are gathered, so every process logs the numbers of one process
    on the whole set (equal when the set has at most ``max_points`` examples). With TensorBoard the four curves
    share one CUSTOM SCALARS chart (added to :class:`~lightning_vae.callbacks.TensorBoardDashboard`'s layout when
    the trainer has one, else written by the monitor).

    Reads what ``validation_step`` returns (docs/architecture.md, "An evaluation"): the first latent group's
    ``"posterior"``, a diagonal Gaussian over vectors (``Independent(Normal(loc, scale), 1)``, as
    :class:`~lightning_vae.distributions.DiagonalGaussian`), and ``"z"`` (``(B, D)`` or ``(k, B, D)``; the first
    sample), so any LightningModule works. The prior is the model's ``prior_distribution()`` (or ``top_prior``),
    else the standard normal; when it is not a factorised Gaussian, the dimension-wise KL is not defined and only
    the mutual information and total correlation are logged.

    Args:
        max_points: Most samples at which ``log q(z)`` is evaluated (a seeded uniform subset); ``None`` for all.
            The cost is ``points x N x D`` exponentials in float64 (4e8 for 4096 points of a 10,000-example set
            with ``D = 10``).
        chunk_size: Most elements of one block of log-densities.
        tensorboard_chart: Put the four curves on one TensorBoard CUSTOM SCALARS chart.

    Raises:
        TypeError: For arguments of the wrong type; at a validation step whose outputs hold no diagonal-Gaussian
            ``"posterior"``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[KLDecompositionMonitor()], logger=False, enable_progress_bar=False)
    """

    def __init__(
        self, max_points: int | None = 4096, chunk_size: int = CHUNK_SIZE, tensorboard_chart: bool = True
    ) -> None:
        super().__init__()
        self.max_points = None if max_points is None else check_int("max_points", max_points, low=1)
        self.chunk_size = check_int("chunk_size", chunk_size, low=1)
        self.tensorboard_chart = check_type("tensorboard_chart", tensorboard_chart, bool, "a bool")
        self.metric = KLDecomposition(max_points=self.max_points, chunk_size=self.chunk_size)
        #: The last values logged.
        self.last: dict[str, float] = {}
        self._chart_written = False
        self._told_non_factorised = False

    # ------------------------------------------------------------------ the chart
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.tensorboard_chart:
            return
        # TensorBoard shows the first layout written in a run: join the dashboard's rather than write a second.
        dashboard = next((c for c in trainer.callbacks if isinstance(c, TensorBoardDashboard)), None)  # type: ignore[attr-defined]
        if dashboard is not None and dashboard.layout:
            for category, charts in LAYOUT.items():
                dashboard.layout.setdefault(category, {}).update(charts)
            self._chart_written = True

    def _write_chart(self, trainer: Trainer) -> None:
        if self._chart_written or not self.tensorboard_chart or not trainer.is_global_zero:
            return
        logger = find_tensorboard_logger(trainer)
        if logger is not None:
            layout = {c: {t: ["Multiline", tags] for t, tags in charts.items()} for c, charts in LAYOUT.items()}
            logger.experiment.add_custom_scalars(layout)
            self._chart_written = True

    # ------------------------------------------------------------------ collection
    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.metric.reset()
        self.metric.to(pl_module.device)

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
        posterior = outputs.get("posterior") if isinstance(outputs, Mapping) else None
        params = _diagonal_gaussian(posterior)
        if params is None or posterior is None:
            got = type(posterior).__name__ if isinstance(outputs, Mapping) else type(outputs).__name__
            raise TypeError(
                "KLDecompositionMonitor expects validation_step to return a mapping whose 'posterior' is a diagonal "
                f"Gaussian over z (torch Independent(Normal, 1), as DiagonalGaussian), got {got}"
            )
        loc, log_var = params
        z = outputs.get("z")
        z = first_sample(z) if isinstance(z, Tensor) else z
        if not isinstance(z, Tensor) or z.shape != loc.shape:
            z = posterior.sample()
        self.metric.update(loc, log_var, z)

    # ------------------------------------------------------------------ the decomposition
    def _prior(self, pl_module: LightningModule) -> tuple[Tensor, Tensor] | None:
        prior = module_prior(pl_module)
        if prior is None:
            return torch.zeros(()), torch.zeros(())
        params = _diagonal_gaussian(prior)
        if params is None or tuple(prior.batch_shape) != ():
            if not self._told_non_factorised:
                rank_zero_info(
                    f"KLDecompositionMonitor: the prior ({type(prior).__name__}) is not a factorised Gaussian; the "
                    "dimension-wise KL is not defined, so only the mutual information and total correlation are logged"
                )
                self._told_non_factorised = True
            return None
        return params

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.metric.update_count == 0:
            return
        prior = self._prior(pl_module)
        self.metric.prior_loc, self.metric.prior_log_var = (None, None) if prior is None else prior
        values = self.metric.compute()
        names = (*PARTS, "kl") if prior is not None else PARTS[:2]
        # Every process computed the numbers of the gathered set; sync_dist only keeps Lightning quiet.
        for name in names:
            pl_module.log(f"kl_decomposition/{name}", values[name].float(), sync_dist=True)
        self.last = {name: float(values[name]) for name in names}
        if not trainer.sanity_checking:
            self._write_chart(trainer)


__all__ = ["KLDecompositionMonitor", "LAYOUT", "module_prior"]
