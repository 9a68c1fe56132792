"""TensorBoard dashboards of a VAE run: the HPARAMS tab with the final metrics, and one CUSTOM SCALARS layout.

HPARAMS: the run's hyperparameters (the module's and the DataModule's, as the logger recorded them)
are written as a session when training starts and the session is closed when it ends. No metric list
is fixed in advance: TensorBoard then lists every scalar of the run as a metric column and shows its
last value, so the table holds the final ``val/elbo``, ``val/kl``, ``collapse/active_units``, ...

CUSTOM SCALARS: one dashboard grouping loss, ELBO, reconstruction, KL, β, free bits, active units
and mutual information, train and validation curves on the same chart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_vae.checks import check_type
from lightning_vae.viz import (
    add_summary,
    disable_default_hp_metric,
    find_tensorboard,
    find_tensorboard_logger,
    session_end_summary,
    session_start_summary,
)
from lightning_vae.viz.summaries import SessionStatus

# The session summaries are built in viz/summaries.py; their names stay importable from here.
__all__ = ["DEFAULT_LAYOUT", "TensorBoardDashboard", "flatten_hparams", "session_end_summary", "session_start_summary"]

#: The default CUSTOM SCALARS layout: category -> chart title -> regular expressions of the tags drawn together.
DEFAULT_LAYOUT: dict[str, dict[str, list[str]]] = {
    "VAE": {
        "loss": [r"train/loss$", r"val/loss$"],
        "ELBO (nats per example, higher is better)": [r"train/elbo$", r"val/elbo$", r"test/elbo$"],
        "NLL -log p(x), importance weighted (nats, lower is better)": [r"val/nll_iw$", r"test/nll_iw$"],
        "reconstruction -log p(x|z) (nats, lower is better)": [r"train/recon$", r"val/recon$"],
        "KL(q(z|x) || p(z))": [r"train/kl$", r"val/kl$", r"train/kl_raw$"],
        "beta": [r"train/beta$"],
        "free bits (nats)": [r"train/free_bits$"],
        "active units": [r"collapse/active_units"],
        "mutual information I(x; z)": [r"collapse/mutual_info"],
    }
}


def flatten_hparams(params: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Flatten nested hyperparameters to ``{"encoder/init_args/latent_dim": 10, ...}`` of HPARAMS-friendly values.

    Keys starting with ``_`` (LightningCLI's bookkeeping) are dropped; ``None`` becomes ``"None"`` and
    sequences their string form.

    Example::

        >>> flatten_hparams({"beta": 4.0, "encoder": {"init_args": {"latent_dim": 10}}, "_class_path": "x"})
        {'beta': 4.0, 'encoder/init_args/latent_dim': 10}
    """
    flat: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        key = str(key)
        if key.startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, prefix=f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
            flat[name] = value.item()
        else:
            flat[name] = str(value)
    return flat


def _check_layout(layout: Any) -> dict[str, dict[str, list[str]]]:
    """``layout`` as ``{category: {chart title: [tag regex, ...]}}`` of strings."""
    what = "a mapping category -> chart title -> list of tag regexes"
    for charts in check_type("layout", layout, Mapping, what).values():
        for tags in check_type("layout", charts, Mapping, what).values():
            if isinstance(tags, str) or not isinstance(tags, Sequence):
                raise TypeError(f"Expected `layout` to be {what}, got {layout!r}")
    return {str(c): {str(t): [str(r) for r in tags] for t, tags in charts.items()} for c, charts in layout.items()}


class TensorBoardDashboard(Callback):
    """Fill TensorBoard's HPARAMS tab (hyperparameters and final metrics) and a CUSTOM SCALARS dashboard.

    Lightning's placeholder metric ``hp_metric`` is switched off on the trainer's ``TensorBoardLogger``
    (it would hide the real metrics from the HPARAMS tab); all scalars of the run become its metric
    columns instead. Rank zero only; nothing runs during training steps.

    Args:
        layout: CUSTOM SCALARS layout ``{category: {chart: [tag regex, ...]}}``; ``None`` for
            :data:`DEFAULT_LAYOUT`, ``{}`` for none.
        hparams: Write the HPARAMS session.
        extra_hparams: Hyperparameters added to those the logger recorded (e.g. the trainer's ``max_epochs``).

    Raises:
        TypeError: If ``layout`` is not a mapping of mappings of regex lists.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[TensorBoardDashboard()], logger=False)
    """

    def __init__(
        self,
        layout: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        hparams: bool = True,
        extra_hparams: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.layout = _check_layout(DEFAULT_LAYOUT if layout is None else layout)
        self.hparams = bool(hparams)
        self.extra_hparams = dict(extra_hparams or {})
        self._open = False

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.hparams:
            return
        for logger in trainer.loggers:
            if disable_default_hp_metric(logger):
                rank_zero_info(
                    "TensorBoardDashboard: `hp_metric` is off; the HPARAMS tab lists the run's final metrics"
                )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After Lightning has logged the module's and DataModule's hyperparameters (logger.hparams).
        if not trainer.is_global_zero:
            return
        logger = find_tensorboard_logger(trainer)
        if logger is None:
            rank_zero_warn(
                "TensorBoardDashboard fills TensorBoard's HPARAMS and CUSTOM SCALARS tabs and the trainer has no "
                "TensorBoardLogger: nothing written (other loggers record the hyperparameters and scalars themselves)"
            )
            return
        writer = logger.experiment
        if self.layout:
            writer.add_custom_scalars(
                {
                    cat: {title: ["Multiline", tags] for title, tags in charts.items()}
                    for cat, charts in self.layout.items()
                }
            )
        if self.hparams:
            params = dict(logger.hparams) if logger.hparams else dict(pl_module.hparams)
            params.update(self.extra_hparams)
            add_summary(writer, session_start_summary(flatten_hparams(params)), trainer.global_step)
            self._open = True
        writer.flush()

    def _close(self, trainer: Trainer, status: SessionStatus) -> None:
        if not (self._open and trainer.is_global_zero):
            return
        writer = find_tensorboard(trainer)
        if writer is not None:
            add_summary(writer, session_end_summary(status), trainer.global_step)
            writer.flush()
        self._open = False

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close(trainer, "STATUS_SUCCESS")

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._close(trainer, "STATUS_FAILURE")
