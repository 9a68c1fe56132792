"""TensorBoard dashboards of a VAE run: the HPARAMS tab with the final metrics, and one CUSTOM SCALARS layout.

HPARAMS: the run's hyperparameters (the module's and the DataModule's, as the logger recorded them)
are written as a session when training starts and the session is closed when it ends. No metric list
is fixed in advance: TensorBoard then lists every scalar of the run as a metric column and shows its
last value, so the table holds the final ``val/elbo``, ``val/kl``, ``collapse/active_units``, ...

CUSTOM SCALARS: one dashboard grouping loss, ELBO, reconstruction, KL, β, free bits, active units
and mutual information, train and validation curves on the same chart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_vae.viz import add_summary, disable_default_hp_metric, find_tensorboard

__all__ = ["DEFAULT_LAYOUT", "TensorBoardDashboard", "flatten_hparams", "session_end_summary", "session_start_summary"]

#: The default CUSTOM SCALARS layout: category -> chart title -> regular expressions of the tags drawn together.
DEFAULT_LAYOUT: dict[str, dict[str, list[str]]] = {
    "VAE": {
        "loss": [r"train/loss$", r"val/loss$"],
        "ELBO (nats per example)": [r"train/elbo$", r"val/elbo$", r"val/nll_iw$", r"test/elbo$"],
        "reconstruction log-likelihood": [r"train/recon$", r"val/recon$"],
        "KL(q(z|x) || p(z))": [r"train/kl$", r"val/kl$", r"train/kl_raw$"],
        "beta": [r"train/beta$"],
        "free bits (nats)": [r"train/free_bits$"],
        "active units": [r"collapse/active_units"],
        "mutual information I(x; z)": [r"collapse/mutual_info"],
    }
}

_STATUSES = ("STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING")


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


def _hparams_summary(tag: str, **plugin_data: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **plugin_data)
    smd = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=smd)])


def session_start_summary(hparams: Mapping[str, bool | int | float | str], start_time: float | None = None) -> Any:
    """The ``Summary`` that opens an HPARAMS session with these (flat) hyperparameters."""
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionStartInfo

    info = SessionStartInfo(start_time_secs=time.time() if start_time is None else start_time)
    for key, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[key].number_value = float(value)
        else:
            info.hparams[key].string_value = str(value)
    return _hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=info)


def session_end_summary(status: str = "STATUS_SUCCESS", end_time: float | None = None) -> Any:
    """The ``Summary`` that closes an HPARAMS session (``status``: ``STATUS_SUCCESS``, ``STATUS_FAILURE``, ...)."""
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo

    if status not in _STATUSES:
        raise ValueError(f"Expected `status` to be one of {_STATUSES}, got {status!r}")
    info = SessionEndInfo(status=Status.Value(status), end_time_secs=time.time() if end_time is None else end_time)
    return _hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=info)


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
        ValueError: If ``layout`` is not a mapping of mappings of regex lists.

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
        layout = DEFAULT_LAYOUT if layout is None else layout
        if not isinstance(layout, Mapping) or not all(
            isinstance(charts, Mapping)
            and all(isinstance(tags, Sequence) and not isinstance(tags, str) for tags in charts.values())
            for charts in layout.values()
        ):
            raise ValueError(f"Expected `layout` to map category -> chart title -> list of tag regexes, got {layout!r}")
        self.layout = {
            str(c): {str(t): [str(r) for r in tags] for t, tags in charts.items()} for c, charts in layout.items()
        }
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
        writer = find_tensorboard(trainer)
        if writer is None:
            rank_zero_warn(
                "TensorBoardDashboard fills TensorBoard's HPARAMS and CUSTOM SCALARS tabs and the trainer has no "
                "TensorBoardLogger: nothing written (other loggers record the hyperparameters and scalars themselves)"
            )
            return
        if self.layout:
            writer.add_custom_scalars(
                {
                    cat: {title: ["Multiline", tags] for title, tags in charts.items()}
                    for cat, charts in self.layout.items()
                }
            )
        if self.hparams:
            logger = next(lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger))
            params = dict(logger.hparams) if logger.hparams else dict(pl_module.hparams)
            params.update(self.extra_hparams)
            add_summary(writer, session_start_summary(flatten_hparams(params)), trainer.global_step)
            self._open = True
        writer.flush()

    def _close(self, trainer: Trainer, status: str) -> None:
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
