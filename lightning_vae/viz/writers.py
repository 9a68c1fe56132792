"""Write views (images, values per dimension, captions) through whichever loggers a trainer has.

Each logger gets a view in the way it can show it:

============================================  ==========================================================
logger                                        images / values per dimension (e.g. the KL of each latent)
============================================  ==========================================================
``TensorBoardLogger``                         image summaries (PNG) / histograms; captions in the TEXT tab
a logger with ``log_image`` (``WandbLogger``)  ``log_image(key=tag, images=[array], step=step)`` / a bar chart
                                              image; captions as ``caption=[...]`` when it takes them
``MLFlowLogger``                              ``MlflowClient.log_image(run_id, array, key=tag, step=step)``
                                              / a bar chart image; captions as text artifacts
``CometLogger``                               ``Experiment.log_image(array, name=tag, step=step)`` / a bar
                                              chart image; captions through ``log_text``
any other logger (``CSVLogger``, ...) or      PNG files ``<folder>/<tag>/step_<step>.png`` / rows of a CSV
none                                          file ``<folder>/<tag>.csv``; captions as ``step_<step>.txt``
============================================  ==========================================================

The folder is the logger's ``log_dir`` (or ``save_dir``), or the trainer's ``default_root_dir`` when
the trainer has no logger. Nothing is written under ``fast_dev_run`` (Lightning turns logging off
there). When a logger fails to take a view, the failure is reported once and the view goes to files
in its folder instead; the first file written to a folder is announced once, so nothing disappears
silently.

The only uses of private attributes of other libraries in this package are here:
``SummaryWriter._get_file_writer`` (to write summaries encoded by this package, with no Pillow) and
``TensorBoardLogger._default_hp_metric``.
"""

from __future__ import annotations

import csv
import inspect
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CometLogger, Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_vae.viz.colors import bar_chart
from lightning_vae.viz.png import encode_png, to_uint8

__all__ = [
    "ViewWriter",
    "add_summary",
    "disable_default_hp_metric",
    "find_tensorboard",
    "image_summary",
    "logger_folder",
    "logger_kind",
    "tag_path",
]


# ---------------------------------------------------------------------------------------- TensorBoard
def find_tensorboard(trainer: Trainer) -> Any | None:
    """The ``SummaryWriter`` of the trainer's first ``TensorBoardLogger``, or ``None``."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def add_summary(experiment: Any, summary: Any, step: int) -> None:
    """Write a TensorBoard ``Summary`` protobuf through a ``SummaryWriter`` (its event file writer)."""
    experiment._get_file_writer().add_summary(summary, step)


def disable_default_hp_metric(logger: Any) -> bool:
    """Switch off Lightning's placeholder ``hp_metric`` on a ``TensorBoardLogger``; return whether it was on."""
    if isinstance(logger, TensorBoardLogger) and getattr(logger, "_default_hp_metric", False):
        logger._default_hp_metric = False
        return True
    return False


def image_summary(tag: str, image: Tensor | np.ndarray) -> Any:
    """A TensorBoard ``Summary`` holding an image as PNG (what ``add_image`` writes).

    Args:
        tag: The image's tag.
        image: Float ``(C, H, W)`` in [0, 1], or ``uint8`` ``(H, W, C)``.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    array = to_uint8(image)
    h, w, c = array.shape
    png = encode_png(array)
    return Summary(
        value=[Summary.Value(tag=tag, image=Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=png))]
    )


# ---------------------------------------------------------------------------------------- loggers and folders
def logger_kind(logger: Any) -> str:
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


def _accepts(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _for_loggers(array: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` uint8 as image loggers take it: ``(H, W)`` for grey, ``(H, W, C)`` otherwise."""
    return array[:, :, 0] if array.shape[2] == 1 else array


# ---------------------------------------------------------------------------------------- the writer
#: Folders whose first view file has been announced (in this process).
_ANNOUNCED: set[str] = set()


class ViewWriter:
    """Write one callback's views through every logger of the trainer (see the module docs for how each gets them).

    Call it on the process that draws (global rank zero); it does not communicate.

    Args:
        owner: Name used in the messages (the callback's class name).

    Example::

        >>> import tempfile, torch
        >>> from lightning.pytorch import Trainer
        >>> with tempfile.TemporaryDirectory() as root:
        ...     trainer = Trainer(logger=False, default_root_dir=root)
        ...     paths = ViewWriter("demo").image(trainer, "images/demo", torch.zeros(1, 4, 4), step=3)
        ...     Path(paths[0]).relative_to(root).as_posix()
        'images/demo/step_000003.png'
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._said: set[str] = set()

    # ------------------------------------------------------------------ bookkeeping
    def _say(self, key: str, message: str, warn: bool = False) -> None:
        if key in self._said:
            return
        self._said.add(key)
        (rank_zero_warn if warn else rank_zero_info)(f"{self.owner}: {message}")

    def active(self, trainer: Trainer) -> bool:
        """Whether views are written at all: not under ``fast_dev_run``, and not only to ``DummyLogger``."""
        if getattr(trainer, "fast_dev_run", False):
            return False
        return not trainer.loggers or any(logger_kind(lg) != "off" for lg in trainer.loggers)

    def targets(self, trainer: Trainer) -> list[tuple[str, Logger | None]]:
        """``(kind, logger)`` for each logger that takes views; ``[("files", None)]`` when there is no logger."""
        if not self.active(trainer):
            return []
        if not trainer.loggers:
            return [("files", None)]
        return [(kind, lg) for lg in trainer.loggers if (kind := logger_kind(lg)) != "off"]

    def folders(self, trainer: Trainer) -> list[str]:
        """The folders that receive files: those of file loggers, or ``default_root_dir`` without a logger."""
        out: list[str] = []
        for kind, logger in self.targets(trainer):
            folder = logger_folder(trainer, logger)
            if kind == "files" and folder not in out:
                out.append(folder)
        return out

    def _fallback(self, trainer: Trainer, logger: Any, what: str, err: Exception) -> str:
        name = type(logger).__name__
        folder = logger_folder(trainer, logger)
        self._say(
            f"failed:{name}",
            f"{name} did not take the {what} ({type(err).__name__}: {err}); writing views as files under {folder}",
            warn=True,
        )
        return folder

    def _announce(self, folder: str, logger: Any) -> None:
        # Once per folder and process, whichever view writes there first.
        if folder in _ANNOUNCED:
            return
        _ANNOUNCED.add(folder)
        who = "the trainer has no logger" if logger is None else f"{type(logger).__name__} does not show images"
        rank_zero_info(f"{self.owner}: {who}; the views go to PNG and CSV files under {folder}")

    # ------------------------------------------------------------------ images
    def _send(
        self, kind: str, logger: Any, tag: str, array: np.ndarray, step: int, caption: str | None, caption_tag: str
    ) -> None:
        """Hand one image (``uint8`` ``(H, W, C)``) to a logger that shows images."""
        if kind == "tensorboard":
            experiment = logger.experiment
            add_summary(experiment, image_summary(tag, array), step)
            if caption:
                experiment.add_text(caption_tag, caption, step)
        elif kind == "log_image":
            kwargs: dict[str, Any] = {}
            if caption and _accepts(logger.log_image, "caption"):
                kwargs["caption"] = [caption]
            elif caption:
                name = type(logger).__name__
                self._say(f"caption:{name}", f"{name}.log_image takes no caption; texts such as {caption_tag} stay out")
            logger.log_image(key=tag, images=[_for_loggers(array)], step=step, **kwargs)
        elif kind == "mlflow":
            client, run_id = logger.experiment, logger.run_id
            name = f"{tag_path(tag).as_posix()}/step_{step:06d}"
            try:
                client.log_image(run_id, _for_loggers(array), key=tag, step=step)
            except TypeError:  # MLflow before 2.12 has no key/step: one artifact per step
                client.log_image(run_id, _for_loggers(array), artifact_file=f"{name}.png")
            if caption:
                client.log_text(run_id, caption, f"{name}.txt")
        else:  # comet
            experiment = logger.experiment
            experiment.log_image(_for_loggers(array), name=tag, step=step)
            if caption:
                experiment.log_text(caption, step=step, metadata={"tag": caption_tag})

    def image(
        self,
        trainer: Trainer,
        tag: str,
        image: Tensor | np.ndarray,
        step: int,
        caption: str | None = None,
        caption_tag: str | None = None,
    ) -> list[str]:
        """Write ``image`` under ``tag`` at ``step`` through every logger; return where it went.

        Args:
            trainer: The trainer whose loggers receive the image.
            tag: Name of the image, ``/``-separated.
            image: Float ``(C, H, W)`` in [0, 1], or ``uint8`` ``(H, W, C)``.
            step: Global step.
            caption: Text that explains the image (TensorBoard's TEXT tab, a caption, a ``.txt`` file).
            caption_tag: TensorBoard tag of the caption (default ``tag``).

        Returns:
            One entry per destination: ``"tensorboard"``, the logger's class name, or a file path.
        """
        array = to_uint8(image)
        done: list[str] = []
        folders: list[str] = []
        for kind, logger in self.targets(trainer):
            if kind == "files":
                folders.append(logger_folder(trainer, logger))
                self._announce(folders[-1], logger)
                continue
            try:
                self._send(kind, logger, tag, array, step, caption, caption_tag or tag)
                done.append("tensorboard" if kind == "tensorboard" else type(logger).__name__)
            except Exception as err:  # noqa: BLE001 - a logger failure must not stop training; reported once
                folders.append(self._fallback(trainer, logger, f"image `{tag}`", err))
        for folder in dict.fromkeys(folders):
            target = Path(folder) / tag_path(tag) / f"step_{step:06d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_png(array))
            if caption:
                target.with_suffix(".txt").write_text(caption + "\n")
            done.append(str(target))
        return done

    # ------------------------------------------------------------------ values per dimension
    def values(self, trainer: Trainer, tag: str, values: Tensor, step: int, stage: str = "validate") -> list[str]:
        """Write values ``(D,)`` (e.g. the KL of each latent dimension) under ``tag``; return where they went.

        TensorBoard gets a histogram; image loggers a bar chart (one bar per dimension, the caption
        giving the value at full height); file loggers a row ``stage, step, value_0, ...`` appended to
        ``<folder>/<tag>.csv`` (a header row first).
        """
        values = values.detach().float().cpu().flatten()
        done: list[str] = []
        folders: list[str] = []
        chart: tuple[Tensor, float] | None = None
        for kind, logger in self.targets(trainer):
            if kind == "files":
                folders.append(logger_folder(trainer, logger))
                self._announce(folders[-1], logger)
                continue
            try:
                if kind == "tensorboard":
                    logger.experiment.add_histogram(tag, values, step)  # type: ignore[union-attr]
                else:
                    chart = chart or bar_chart(values)
                    caption = (
                        f"{tag} ({stage}, step {step}): one bar per dimension, 0 to {values.numel() - 1} from the "
                        f"left; a full bar is {chart[1]:.4g}"
                    )
                    self._send(kind, logger, tag, to_uint8(chart[0]), step, caption, tag)
                done.append("tensorboard" if kind == "tensorboard" else type(logger).__name__)
            except Exception as err:  # noqa: BLE001 - reported once, then written as files
                folders.append(self._fallback(trainer, logger, f"values `{tag}`", err))
        for folder in dict.fromkeys(folders):
            target = Path(folder) / tag_path(tag)
            target = target.parent / f"{target.name}.csv"
            target.parent.mkdir(parents=True, exist_ok=True)
            new = not target.exists() or target.stat().st_size == 0
            with open(target, "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(["stage", "step", *range(values.numel())])
                writer.writerow([stage, step, *(f"{v:.6g}" for v in values.tolist())])
            done.append(str(target))
        return done
