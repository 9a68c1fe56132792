"""Export what ``predict`` computes (``VAE.predict_step``: posterior means) to a ``.npy`` file, in dataset order.

    lightning-vae predict --config configs/shapes.yaml --ckpt_path last.ckpt \\
        --trainer.callbacks+=PosteriorMeanWriter --trainer.callbacks.output_path=latents.npy
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from lightning_vae.callbacks.embedding import _labels

__all__ = ["PosteriorMeanWriter"]


class PosteriorMeanWriter(BasePredictionWriter):
    """Write the predictions of every predict batch (``(B, D)`` posterior means for ``VAE``) to one ``.npy`` file.

    Rows are in the order of the dataset, also under DDP (ranks are gathered and the padding of the
    distributed sampler dropped). When batches carry labels or factors (``(x, y)`` tuples, or a
    ``y``/``label``/``factors`` key), they are written beside, to ``<stem>_labels.npy``.

    Args:
        output_path: The ``.npy`` file to write.
        labels: Also write the labels when the batches have them.

    Raises:
        ValueError: If ``output_path`` does not end in ``.npy``.

    Example::

        >>> writer = PosteriorMeanWriter("latents.npy")
        >>> writer.labels_path.name
        'latents_labels.npy'
    """

    def __init__(self, output_path: str | os.PathLike = "latents.npy", labels: bool = True) -> None:
        super().__init__(write_interval="batch")
        path = Path(output_path)
        if path.suffix != ".npy":
            raise ValueError(f"Expected `output_path` to end in .npy, got {str(output_path)!r}")
        self.output_path, self.labels = path, bool(labels)
        self._chunks: list[Tensor] = []
        self._label_chunks: list[Tensor] = []
        self._indices: list[Tensor] = []

    @property
    def labels_path(self) -> Path:
        """Where the labels go: ``<stem>_labels.npy`` beside the output."""
        return self.output_path.with_name(f"{self.output_path.stem}_labels.npy")

    @override
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._chunks, self._label_chunks, self._indices = [], [], []

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, Tensor):
            raise TypeError(
                f"PosteriorMeanWriter expects predict_step to return a tensor, got {type(prediction).__name__}"
            )
        self._chunks.append(prediction.detach().float())
        n = prediction.shape[0]
        if batch_indices is not None and len(batch_indices) == n:
            self._indices.append(torch.as_tensor(list(batch_indices), dtype=torch.long, device=prediction.device))
        labels = _labels(batch) if self.labels else None
        if labels is not None and labels.shape[0] == n:
            self._label_chunks.append(labels.detach())

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._chunks:
            return
        values = torch.cat(self._chunks)
        labels = torch.cat(self._label_chunks) if len(self._label_chunks) == len(self._chunks) else None
        indices = torch.cat(self._indices) if len(self._indices) == len(self._chunks) else None
        if trainer.world_size > 1:
            values = trainer.strategy.all_gather(values).flatten(0, 1)
            labels = None if labels is None else trainer.strategy.all_gather(labels).flatten(0, 1)
            if indices is None:
                raise RuntimeError("PosteriorMeanWriter needs the dataset indices of each batch to merge ranks")
            indices = trainer.strategy.all_gather(indices).flatten(0, 1)
        if indices is not None:
            # Dataset order; a distributed sampler's padding repeats indices, keep each once.
            order = torch.argsort(indices, stable=True)
            indices, values = indices[order], values[order]
            labels = None if labels is None else labels[order]
            keep = torch.ones_like(indices, dtype=torch.bool)
            keep[1:] = indices[1:] != indices[:-1]
            values = values[keep]
            labels = None if labels is None else labels[keep]
        if trainer.is_global_zero:
            self.output_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(self.output_path, values.cpu().numpy())
            message = f"PosteriorMeanWriter: wrote {tuple(values.shape)} to {self.output_path}"
            if labels is not None:
                np.save(self.labels_path, labels.cpu().numpy())
                message += f" and labels {tuple(labels.shape)} to {self.labels_path}"
            rank_zero_info(message)
        self._chunks, self._label_chunks, self._indices = [], [], []
