"""What kind of logger a trainer has, and where its files go: how :class:`~lightning_vae.viz.ViewWriter` chooses.

See :mod:`lightning_vae.viz.writers` for what each kind of logger receives.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CometLogger, Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger

__all__ = ["LoggerKind", "accepts", "for_loggers", "logger_folder", "logger_kind", "tag_path"]

#: How a logger takes images (see :func:`logger_kind`).
LoggerKind = Literal["tensorboard", "log_image", "mlflow", "comet", "files", "off"]


def logger_kind(logger: Any) -> LoggerKind:
    """How a logger takes images: ``"tensorboard"``, ``"log_image"``, ``"mlflow"``, ``"comet"``, ``"files"``, ``"off"``.

    ``"off"`` is Lightning's ``DummyLogger`` (``fast_dev_run``).

    Example::

        >>> from lightning.pytorch.loggers import CSVLogger
        >>> logger_kind(CSVLogger("logs"))
        'files'
    """
    if isinstance(logger, TensorBoardLogger):
        return "tensorboard"
    if isinstance(logger, DummyLogger):
        return "off"
    if callable(getattr(logger, "log_image", None)):
        return "log_image"
    if isinstance(logger, MLFlowLogger):
        return "mlflow"
    if isinstance(logger, CometLogger):
        return "comet"
    return "files"


def logger_folder(trainer: Trainer, logger: Logger | None = None) -> str:
    """The folder files of ``logger`` go to: its ``log_dir``, else its ``save_dir``, else ``default_root_dir``.

    Unlike ``trainer.log_dir`` this does not communicate between processes, so rank zero alone may call it.
    """
    if logger is not None:
        for attribute in ("log_dir", "save_dir"):
            try:
                value = getattr(logger, attribute, None)
            except Exception:  # noqa: BLE001 - a logger's property may fail before it is set up
                value = None
            if isinstance(value, (str, os.PathLike)) and os.fspath(value):
                return os.fspath(value)
    return os.fspath(trainer.default_root_dir)


def tag_path(tag: str) -> Path:
    """A relative path for a tag: one folder per ``/``-separated part, odd characters replaced by ``_``.

    Parts like ``..`` cannot climb out of the folder.

    Example::

        >>> tag_path("images/recon structions").as_posix(), tag_path("../x").as_posix()
        ('images/recon_structions', '_/x')
    """
    parts = [re.sub(r"[^\w.-]+", "_", part) for part in str(tag).split("/") if part]
    parts = ["_" if set(part) <= {"."} else part for part in parts]
    return Path(*parts) if parts else Path("_")


def accepts(function: Any, name: str) -> bool:
    """Whether ``function`` takes a keyword argument ``name`` (or any keyword)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def for_loggers(array: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` uint8 as image loggers take it: ``(H, W)`` for grey, ``(H, W, C)`` otherwise."""
    return array[:, :, 0] if array.shape[2] == 1 else array
