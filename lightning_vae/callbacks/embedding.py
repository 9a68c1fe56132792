"""The latent space in TensorBoard's embedding projector: posterior means, labels or factors, thumbnails.

The projector's files are written by :func:`~lightning_vae.viz.write_projector_embedding` (no Pillow
needed). Without a ``TensorBoardLogger`` the same files go to the run's folder (the ``log_dir`` of a
``CSVLogger``, or ``default_root_dir`` without a logger), where ``tensorboard --logdir <folder>``
shows them in the PROJECTOR tab.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_vae.callbacks.batches import LABEL_KEYS, batch_labels, check_group, posterior_means
from lightning_vae.checks import check_int, check_type
from lightning_vae.utilities import batch_data
from lightning_vae.viz import (
    ViewWriter,
    check_value_range,
    find_tensorboard,
    is_image,
    logger_folder,
    to_display,
    write_projector_embedding,
)

# write_projector_embedding (viz/projector.py) and LABEL_KEYS (batches.py) stay importable from here.
__all__ = ["LABEL_KEYS", "LatentEmbeddingLogger", "write_projector_embedding"]


class LatentEmbeddingLogger(Callback):
    """Show the latent space in TensorBoard's PROJECTOR tab: posterior means of validation examples.

    During validation the posterior means of the first ``n_examples`` examples are kept (from the
    step outputs of the monitor protocol, else ``module.encode``; with several latent groups, those of
    ``group``, by default the first), with their labels or factors as
    metadata (the second element of an ``(x, y)`` batch, or a ``y``/``label``/``factors`` key of a
    dict batch) and the examples themselves as sprite thumbnails. They are written every
    ``every_n_epochs`` validation epochs, and always at the end of training. Rank zero only.

    Args:
        n_examples: Validation examples shown.
        every_n_epochs: Also write during training, every n-th validation epoch; ``None``: only at the end.
        metadata_header: Column names when the labels have several columns (e.g. the factor names
            ``["shape", "scale", "orientation", "pos_x", "pos_y"]`` of the shapes data).
        thumbnails: Attach the examples as the sprite (when they are images).
        value_range: Range of the data mapped to black..white in the thumbnails.
        tag: Name of the embedding.
        group: The latent group shown (its posterior means); ``None``: the first group.

    Raises:
        ValueError: For a count or frequency below 1, or a bad ``value_range``; at ``setup``, for a ``group``
            the model does not have.
        TypeError: For a count or frequency that is not an int, or a ``group`` that is not a string.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[LatentEmbeddingLogger(n_examples=500)], logger=False)
    """

    def __init__(
        self,
        n_examples: int = 1000,
        every_n_epochs: int | None = None,
        metadata_header: Sequence[str] | None = None,
        thumbnails: bool = True,
        value_range: Sequence[float] = (0.0, 1.0),
        tag: str = "latent/posterior_mean",
        group: str | None = None,
    ) -> None:
        super().__init__()
        self.n_examples = check_int("n_examples", n_examples, low=1)
        self.every_n_epochs = None if every_n_epochs is None else check_int("every_n_epochs", every_n_epochs, low=1)
        self.metadata_header = None if metadata_header is None else [str(h) for h in metadata_header]
        self.thumbnails = bool(thumbnails)
        self.value_range = check_value_range(value_range)
        self.tag = tag
        self.group = None if group is None else check_type("group", group, str, "a latent group's name or None")
        self._means: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._images: list[Tensor] = []
        self._collected_at: int | None = None
        self._written_at: int | None = None
        self._out = ViewWriter(type(self).__name__)
        self._announced = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(tag=self.tag)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        check_group(pl_module, self.group, "LatentEmbeddingLogger")

    def _count(self) -> int:
        return sum(m.shape[0] for m in self._means)

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._means, self._labels, self._images = [], [], []

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
        if trainer.sanity_checking or not trainer.is_global_zero or dataloader_idx != 0:
            return
        need = self.n_examples - self._count()
        if need <= 0:
            return
        x = batch_data(pl_module, batch, optional=True)
        if x is None:
            return
        means = posterior_means(pl_module, outputs, x, self.group)
        self._means.append(means[:need].detach().float().cpu())
        labels = batch_labels(batch)
        if labels is not None:
            self._labels.append(labels[:need].detach().cpu())
        if self.thumbnails and is_image(tuple(x.shape[1:])):
            self._images.append(to_display(x[:need], self.value_range))
        self._collected_at = trainer.global_step

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._write(trainer)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: Trainer) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self._means:
            return
        if self._written_at == self._collected_at:
            return
        folder = self._folder(trainer)
        if folder is None:
            return
        means = torch.cat(self._means)
        n = means.shape[0]
        labels = torch.cat(self._labels) if self._labels and sum(t.shape[0] for t in self._labels) == n else None
        images = torch.cat(self._images) if self._images and sum(t.shape[0] for t in self._images) == n else None
        header = self.metadata_header
        if labels is not None and header is not None and (labels.dim() == 1 or labels.shape[1] != len(header)):
            rank_zero_warn(
                f"LatentEmbeddingLogger: `metadata_header` {header} does not fit labels of shape {tuple(labels.shape)}"
            )
            header = None
        try:
            write_projector_embedding(folder, self.tag, int(self._collected_at or 0), means, labels, header, images)
        except ValueError as err:
            rank_zero_warn(f"LatentEmbeddingLogger: {err}; written without thumbnails")
            write_projector_embedding(folder, self.tag, int(self._collected_at or 0), means, labels, header)
        self._written_at = self._collected_at

    def _folder(self, trainer: Trainer) -> str | None:
        """The TensorBoard log folder, else the run's folder for files; ``None`` under ``fast_dev_run``."""
        writer = find_tensorboard(trainer)
        if writer is not None:
            return str(writer.get_logdir())
        if not self._out.active(trainer):
            return None
        folders = self._out.folders(trainer)
        folder = folders[0] if folders else logger_folder(trainer, trainer.loggers[0])
        if not self._announced:
            self._announced = True
            rank_zero_info(
                f"LatentEmbeddingLogger: the trainer has no TensorBoardLogger; the projector files go to {folder} "
                f"(`tensorboard --logdir {folder}` shows them in the PROJECTOR tab)"
            )
        return folder
