"""Every private API of another library this package uses, each behind one function here.

Each is tested in ``tests/test_adapters.py`` against the installed library, so a release that renames or removes
one fails that test by name instead of breaking a run somewhere else. Nothing outside this module reaches into
another library's private members.

- Lightning: ``Trainer._logger_connector.should_update_logs`` (whether this step's values reach the loggers; the
  test ``LearningRateMonitor`` uses), ``Trainer._results`` and its items' ``meta`` / ``has_reset`` (the values
  ``self.log`` keeps, which Lightning walks after every batch), ``fit_loop.epoch_loop._batches_that_stepped``
  (the step the loggers write at), ``LightningModule._hparams_initial`` (what ``hparams_initial`` copies),
  ``TensorBoardLogger._default_hp_metric`` (its placeholder ``hp_metric``),
  ``LightningCLI._model_class`` and ``LightningCLI._parse_ckpt_path`` (the class being configured, and the hook that
  reads a checkpoint's hyperparameters; overridden in :mod:`lightning_vae.cli.vaecli`).
- PyTorch: ``nn.Module._compiled_call_impl`` (whether ``module.compile()`` ran), ``torch._foreach_norm`` (one fused
  norm per tensor), ``Distribution._validate_args`` (the default of argument validation).
- TensorBoard: ``SummaryWriter._get_file_writer`` (write a ``Summary`` protobuf built here).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

#: The private members of LightningCLI that :class:`~lightning_vae.cli.VAECLI` uses or overrides.
LIGHTNING_CLI_MEMBERS = ("_model_class", "_parse_ckpt_path")


def should_update_logs(trainer: Any) -> bool:
    """Whether the loggers receive step values after the current training step (``True`` when it cannot tell)."""
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def retire_step_logs(trainer: Any, fx: str = "training_step") -> int:
    """Mark the step-only values logged in ``fx`` as read, so that Lightning's walk over the logged values after
    every batch skips them until they are logged again; returns how many were marked.

    Lightning keeps each value given to ``self.log`` and, after every training batch, walks all of them to refresh
    the progress bar, ``callback_metrics`` and ``logged_metrics`` (~8 µs per value on a CPU, on every batch, though
    a value logged every 50 steps changes only then). Those three mappings keep the last values either way: marking
    a step-only value (``on_step=True, on_epoch=False``) as read once its step has ended changes none of them, and
    what Lightning's own epoch-end reset does for it. Values aggregated over the epoch are left alone.
    """
    results = getattr(trainer, "_results", None)
    if results is None:
        return 0
    marked = 0
    for item in results.values():
        meta = item.meta
        if meta.fx == fx and meta.on_step and not meta.on_epoch and not item.has_reset:
            item.has_reset = True
            marked += 1
    return marked


def batches_that_stepped(trainer: Any) -> int:
    """The step Lightning's loggers write at now (``fit_loop.epoch_loop._batches_that_stepped``), else
    ``trainer.global_step``."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else int(getattr(trainer, "global_step", 0))


def initial_hparams(pl_module: Any) -> Any:
    """The mapping behind a LightningModule's ``hparams_initial`` (``_hparams_initial``; ``None`` when absent)."""
    return getattr(pl_module, "_hparams_initial", None)


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` has run on ``module`` (in place: its parameter names are unchanged)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def foreach_norms(tensors: list[Tensor]) -> list[Tensor]:
    """The 2-norm of each tensor, fused into one kernel where the device allows."""
    return list(torch._foreach_norm(tensors))


def default_validate_args() -> bool:
    """Whether ``torch.distributions`` validates arguments by default (``set_default_validate_args`` sets it)."""
    return bool(Distribution._validate_args)


def tensorboard_file_writer(experiment: Any) -> Any:
    """The event-file writer of a ``SummaryWriter`` (takes ``Summary`` protobufs built without Pillow)."""
    return experiment._get_file_writer()


def disable_hp_metric(logger: Any) -> bool:
    """Switch off a ``TensorBoardLogger``'s placeholder ``hp_metric``; return whether it was on."""
    if getattr(logger, "_default_hp_metric", False):
        logger._default_hp_metric = False
        return True
    return False


def cli_model_class(cli: Any) -> Any:
    """The LightningModule class a ``LightningCLI`` configures."""
    return cli._model_class


__all__ = [
    "LIGHTNING_CLI_MEMBERS",
    "cli_model_class",
    "default_validate_args",
    "disable_hp_metric",
    "foreach_norms",
    "is_compiled",
    "should_update_logs",
    "tensorboard_file_writer",
]
