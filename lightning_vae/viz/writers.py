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

The private attributes of TensorBoard's ``SummaryWriter`` and Lightning's ``TensorBoardLogger`` that this
package needs are reached through :mod:`lightning_vae.adapters`, in :func:`add_summary` (write summaries this
package encodes, with no Pillow) and :func:`disable_default_hp_metric`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_vae.adapters import disable_hp_metric, tensorboard_file_writer
from lightning_vae.viz.colors import bar_chart
from lightning_vae.viz.loggers import LoggerKind, accepts, for_loggers, logger_folder, logger_kind, tag_path
from lightning_vae.viz.png import encode_png, to_uint8
from lightning_vae.viz.summaries import image_summary

__all__ = ["ViewWriter", "add_summary", "disable_default_hp_metric", "find_tensorboard", "find_tensorboard_logger"]


# ---------------------------------------------------------------------------------------- TensorBoard
def find_tensorboard_logger(trainer: Trainer) -> TensorBoardLogger | None:
    """The trainer's first ``TensorBoardLogger``, or ``None``."""
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def find_tensorboard(trainer: Trainer) -> Any | None:
    """The ``SummaryWriter`` of the trainer's first ``TensorBoardLogger``, or ``None``."""
    logger = find_tensorboard_logger(trainer)
    return None if logger is None else logger.experiment


def add_summary(experiment: Any, summary: Any, step: int) -> None:
    """Write a TensorBoard ``Summary`` protobuf through a ``SummaryWriter`` (its event file writer)."""
    tensorboard_file_writer(experiment).add_summary(summary, step)


def disable_default_hp_metric(logger: Any) -> bool:
    """Switch off Lightning's placeholder ``hp_metric`` on a ``TensorBoardLogger``; return whether it was on."""
    return isinstance(logger, TensorBoardLogger) and disable_hp_metric(logger)


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

    def targets(self, trainer: Trainer) -> list[tuple[LoggerKind, Logger | None]]:
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

    def _each_logger(
        self, trainer: Trainer, what: str, send: Callable[[LoggerKind, Any], None]
    ) -> tuple[list[str], list[str]]:
        """``send(kind, logger)`` to every logger that shows views; return where it went and the file folders.

        The folders are those of file loggers (or ``default_root_dir``), and of the loggers that failed to take
        ``what`` (reported once; a logger failure must not stop training).
        """
        done: list[str] = []
        folders: list[str] = []
        for kind, logger in self.targets(trainer):
            if kind == "files":
                folders.append(logger_folder(trainer, logger))
                self._announce(folders[-1], logger)
                continue
            try:
                send(kind, logger)
                done.append("tensorboard" if kind == "tensorboard" else type(logger).__name__)
            except Exception as err:  # noqa: BLE001 - reported once, then written as files
                folders.append(self._fallback(trainer, logger, what, err))
        return done, list(dict.fromkeys(folders))

    # ------------------------------------------------------------------ images
    def _send(
        self,
        kind: LoggerKind,
        logger: Any,
        tag: str,
        array: np.ndarray,
        step: int,
        caption: str | None,
        caption_tag: str,
    ) -> None:
        """Hand one image (``uint8`` ``(H, W, C)``) to a logger that shows images."""
        if kind == "tensorboard":
            experiment = logger.experiment
            add_summary(experiment, image_summary(tag, array), step)
            if caption:
                experiment.add_text(caption_tag, caption, step)
        elif kind == "log_image":
            kwargs: dict[str, Any] = {}
            if caption and accepts(logger.log_image, "caption"):
                kwargs["caption"] = [caption]
            elif caption:
                name = type(logger).__name__
                self._say(f"caption:{name}", f"{name}.log_image takes no caption; texts such as {caption_tag} stay out")
            logger.log_image(key=tag, images=[for_loggers(array)], step=step, **kwargs)
        elif kind == "mlflow":
            client, run_id = logger.experiment, logger.run_id
            name = f"{tag_path(tag).as_posix()}/step_{step:06d}"
            try:
                client.log_image(run_id, for_loggers(array), key=tag, step=step)
            except TypeError:  # MLflow before 2.12 has no key/step: one artifact per step
                client.log_image(run_id, for_loggers(array), artifact_file=f"{name}.png")
            if caption:
                client.log_text(run_id, caption, f"{name}.txt")
        else:  # comet
            experiment = logger.experiment
            experiment.log_image(for_loggers(array), name=tag, step=step)
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
        file_image: Tensor | np.ndarray | None = None,
    ) -> list[str]:
        """Write ``image`` under ``tag`` at ``step`` through every logger; return where it went.

        Args:
            trainer: The trainer whose loggers receive the image.
            tag: Name of the image, ``/``-separated.
            image: Float ``(C, H, W)`` in [0, 1], or ``uint8`` ``(H, W, C)``.
            step: Global step.
            caption: Text that explains the image (TensorBoard's TEXT tab, a caption, a ``.txt`` file).
            caption_tag: TensorBoard tag of the caption (default ``tag``).
            file_image: What the PNG files get instead of ``image`` (e.g. the image with its axes written on it,
                read without a viewer that shows the caption beside it).

        Returns:
            One entry per destination: ``"tensorboard"``, the logger's class name, or a file path.
        """
        array = to_uint8(image)

        def send(kind: LoggerKind, logger: Any) -> None:
            self._send(kind, logger, tag, array, step, caption, caption_tag or tag)

        done, folders = self._each_logger(trainer, f"image `{tag}`", send)
        for folder in folders:
            target = Path(folder) / tag_path(tag) / f"step_{step:06d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_png(array if file_image is None else to_uint8(file_image)))
            if caption:
                target.with_suffix(".txt").write_text(caption + "\n")
            done.append(str(target))
        return done

    # ------------------------------------------------------------------ values per dimension
    def values(
        self,
        trainer: Trainer,
        tag: str,
        values: Tensor,
        step: int,
        stage: str = "validate",
        names: Sequence[str] | None = None,
    ) -> list[str]:
        """Write values ``(D,)`` (e.g. the KL of each latent dimension) under ``tag``; return where they went.

        TensorBoard gets a histogram; image loggers a bar chart (one bar per dimension, the caption
        giving the value at full height); file loggers a row ``stage, step, value_0, ...`` appended to
        ``<folder>/<tag>.csv`` (a header row first: ``stage, step`` and ``names``, or the indices 0, 1, ...).

        Raises:
            ValueError: For ``names`` that are not one per value.
        """
        values = values.detach().float().cpu().flatten()
        if names is not None and len(names) != values.numel():
            raise ValueError(f"Expected one name per value ({values.numel()}), got {len(names)}: {list(names)}")
        columns = list(range(values.numel())) if names is None else list(names)
        charts: list[tuple[Tensor, float]] = []  # drawn once, for the first image logger

        def send(kind: LoggerKind, logger: Any) -> None:
            if kind == "tensorboard":
                logger.experiment.add_histogram(tag, values, step)
                return
            if not charts:
                charts.append(bar_chart(values))
            image, full = charts[0]
            caption = (
                f"{tag} ({stage}, step {step}): one bar per dimension, {columns[0]} to {columns[-1]} from the "
                f"left; a full bar is {full:.4g}"
            )
            self._send(kind, logger, tag, to_uint8(image), step, caption, tag)

        done, folders = self._each_logger(trainer, f"values `{tag}`", send)
        for folder in folders:
            target = Path(folder) / tag_path(tag)
            target = target.parent / f"{target.name}.csv"
            target.parent.mkdir(parents=True, exist_ok=True)
            new = not target.exists() or target.stat().st_size == 0
            with open(target, "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(["stage", "step", *columns])
                writer.writerow([stage, step, *(f"{v:.6g}" for v in values.tolist())])
            done.append(str(target))
        return done
