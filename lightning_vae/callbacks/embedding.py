"""The latent space in TensorBoard's embedding projector: posterior means, labels or factors, thumbnails.

The projector reads ``projector_config.pbtxt`` in a run's log folder; each entry names a tensor
file (TSV), a metadata file (TSV) and a sprite (one PNG tiling all thumbnails). This callback
writes those files itself (the sprite through :func:`~lightning_vae.viz.encode_png`), so no Pillow
is needed. Without a ``TensorBoardLogger`` the same files go to the run's folder (the ``log_dir`` of a
``CSVLogger``, or ``default_root_dir`` without a logger), where ``tensorboard --logdir <folder>``
shows them in the PROJECTOR tab.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_vae.callbacks.image_view import unpack_data
from lightning_vae.viz import (
    ViewWriter,
    check_value_range,
    encode_png,
    find_tensorboard,
    is_image,
    logger_folder,
    make_grid,
    to_display,
)

__all__ = ["LatentEmbeddingLogger", "write_projector_embedding"]

#: Dict keys searched for labels in a dict batch, in this order.
LABEL_KEYS = ("y", "label", "labels", "target", "targets", "factors")
#: TensorBoard's projector refuses sprites larger than this many pixels per side.
MAX_SPRITE_SIDE = 8192


def _labels(batch: Any) -> Tensor | None:
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and isinstance(batch[1], Tensor):
        return batch[1]
    if isinstance(batch, Mapping):
        for key in LABEL_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    return None


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def write_projector_embedding(
    log_dir: str | os.PathLike,
    tag: str,
    step: int,
    vectors: Tensor,
    metadata: Tensor | None = None,
    metadata_header: Sequence[str] | None = None,
    thumbnails: Tensor | None = None,
) -> str:
    """Write one embedding for the projector under ``log_dir/<step>/<tag>/`` and register it; return that folder.

    Args:
        log_dir: The run's TensorBoard folder.
        tag: Name of the embedding (its tensor shows as ``<tag>:<step>``).
        step: Global step the embedding belongs to.
        vectors: The points ``(N, D)``.
        metadata: One label ``(N,)`` or several columns ``(N, K)`` per point.
        metadata_header: Column names for ``(N, K)`` metadata (default ``factor_0``, ...).
        thumbnails: Images ``(N, C, H, W)`` in [0, 1] tiled into the sprite.

    Raises:
        ValueError: If the shapes disagree, or a header does not match the metadata columns.
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    if vectors.dim() != 2:
        raise ValueError(f"Expected `vectors` of shape (N, D), got {tuple(vectors.shape)}")
    n = vectors.shape[0]
    folder = os.path.join(f"{step:05d}", re.sub(r"[^\w.-]+", "_", tag))
    target = os.path.join(log_dir, folder)
    os.makedirs(target, exist_ok=True)
    np.savetxt(os.path.join(target, "tensors.tsv"), vectors.detach().double().cpu().numpy(), delimiter="\t", fmt="%.6g")

    config = ProjectorConfig()
    config_path = os.path.join(log_dir, "projector_config.pbtxt")
    if os.path.exists(config_path):
        with open(config_path) as f:
            text_format.Parse(f.read(), config)
    name = f"{tag}:{step:05d}"
    kept = [e for e in config.embeddings if e.tensor_name != name]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    entry = config.embeddings.add()
    entry.tensor_name = name
    entry.tensor_path = f"{folder}/tensors.tsv".replace(os.sep, "/")

    if metadata is not None:
        meta = metadata.detach().cpu().double()
        if meta.shape[0] != n or meta.dim() not in (1, 2):
            raise ValueError(f"Expected `metadata` of shape ({n},) or ({n}, K), got {tuple(meta.shape)}")
        lines = []
        if meta.dim() == 2 and meta.shape[1] > 1:
            header = (
                list(metadata_header) if metadata_header is not None else [f"factor_{i}" for i in range(meta.shape[1])]
            )
            if len(header) != meta.shape[1]:
                raise ValueError(f"Expected `metadata_header` with {meta.shape[1]} names, got {list(header)}")
            lines.append("\t".join(header))
        for row in meta.reshape(n, -1).tolist():
            lines.append("\t".join(_format(v) for v in row))
        with open(os.path.join(target, "metadata.tsv"), "w") as f:
            f.write("\n".join(lines) + "\n")
        entry.metadata_path = f"{folder}/metadata.tsv".replace(os.sep, "/")

    if thumbnails is not None:
        if thumbnails.dim() != 4 or thumbnails.shape[0] != n:
            raise ValueError(f"Expected `thumbnails` of shape ({n}, C, H, W), got {tuple(thumbnails.shape)}")
        side = math.ceil(math.sqrt(n))
        h, w = thumbnails.shape[2:]
        if side * max(h, w) > MAX_SPRITE_SIDE:
            raise ValueError(
                f"A sprite of {n} thumbnails of {h}x{w} would be {side * w}x{side * h} pixels; the projector takes "
                f"at most "
                f"{MAX_SPRITE_SIDE}x{MAX_SPRITE_SIDE} (log fewer points or smaller thumbnails)"
            )
        # A square of side x side cells, row by row, as the projector's sprite format describes.
        cells = torch.zeros(side * side, *thumbnails.shape[1:])
        cells[:n] = thumbnails.float().cpu()
        sprite = make_grid(cells, nrow=side, padding=0)
        with open(os.path.join(target, "sprite.png"), "wb") as f:
            f.write(encode_png(sprite))
        entry.sprite.image_path = f"{folder}/sprite.png".replace(os.sep, "/")
        entry.sprite.single_image_dim.extend([w, h])

    with open(config_path, "w") as f:
        f.write(text_format.MessageToString(config))
    return target


class LatentEmbeddingLogger(Callback):
    """Show the latent space in TensorBoard's PROJECTOR tab: posterior means of validation examples.

    During validation the posterior means of the first ``n_examples`` examples are kept (from the
    step outputs of the monitor protocol, else ``module.encode``), with their labels or factors as
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

    Raises:
        ValueError: For a non-positive count or frequency.

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
    ) -> None:
        super().__init__()
        if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples <= 0:
            raise ValueError(f"Expected `n_examples` to be a positive int, got {n_examples!r}")
        if every_n_epochs is not None and (
            isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs <= 0
        ):
            raise ValueError(f"Expected `every_n_epochs` to be a positive int or None, got {every_n_epochs!r}")
        self.n_examples, self.every_n_epochs = n_examples, every_n_epochs
        self.metadata_header = None if metadata_header is None else [str(h) for h in metadata_header]
        self.thumbnails = bool(thumbnails)
        self.value_range = check_value_range(value_range)
        self.tag = tag
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
        x = unpack_data(pl_module, batch)
        if not isinstance(x, Tensor):
            return
        posterior = outputs.get("posterior") if isinstance(outputs, Mapping) else None
        with torch.no_grad():
            means = (posterior if posterior is not None else pl_module.encode(x)).mean  # type: ignore[operator]
        self._means.append(means[:need].detach().float().cpu())
        labels = _labels(batch)
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
