"""Export what ``predict`` computes (``VAE.predict_step``: posterior means) to a ``.npy`` file, in dataset order.

    lightning-vae predict --config configs/cli/shapes.yaml --ckpt_path last.ckpt \\
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
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from lightning_vae.callbacks.batches import batch_labels, check_group, posterior_means
from lightning_vae.checks import check_type
from lightning_vae.utilities import batch_data

__all__ = ["PosteriorMeanWriter"]


class PosteriorMeanWriter(BasePredictionWriter):
    """Write the predictions of every predict batch (``(B, D)`` posterior means for ``VAE``) to one ``.npy`` file.

    Rows are in the order of the dataset, also under DDP: the ranks' rows are gathered (padded to the
    largest shard for the gather and cut back, so shards of any sizes, empty ones too, merge) and
    the padding of the distributed sampler is dropped. When batches carry labels or factors (``(x, y)`` tuples, or a
    ``y``/``label``/``factors`` key), they are written beside, to ``<stem>_labels.npy``.

    With several latent groups the predictions are the first group's posterior means (``VAE.predict_step``);
    ``group`` writes another group's instead, computed from each batch (:func:`~lightning_vae.viz.group_means`).

    Args:
        output_path: The ``.npy`` file to write.
        labels: Also write the labels when the batches have them.
        group: The latent group whose posterior means are written; ``None``: what ``predict_step`` returns.

    Raises:
        ValueError: If ``output_path`` does not end in ``.npy``; at ``setup``, for a ``group`` the model does not
            have.
        TypeError: For a ``group`` that is not a string.

    Example::

        >>> writer = PosteriorMeanWriter("latents.npy")
        >>> writer.labels_path.name
        'latents_labels.npy'
    """

    def __init__(
        self, output_path: str | os.PathLike = "latents.npy", labels: bool = True, group: str | None = None
    ) -> None:
        super().__init__(write_interval="batch")
        self.group = None if group is None else check_type("group", group, str, "a latent group's name or None")
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
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        check_group(pl_module, self.group, "PosteriorMeanWriter")

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
        if self.group is not None:
            x = batch_data(pl_module, batch, optional=True)
            if x is None:
                raise TypeError(f"PosteriorMeanWriter(group={self.group!r}) cannot find the data tensor in the batch")
            prediction = posterior_means(pl_module, None, x, self.group)
        if not isinstance(prediction, Tensor):
            raise TypeError(
                f"PosteriorMeanWriter expects predict_step to return a tensor, got {type(prediction).__name__}"
            )
        if prediction.dim() == 3 and prediction.shape[0] == 1:  # a group's means given one sample of another group
            prediction = prediction[0]
        self._chunks.append(prediction.detach().float())
        n = prediction.shape[0]
        if batch_indices is not None and len(batch_indices) == n:
            self._indices.append(torch.as_tensor(list(batch_indices), dtype=torch.long, device=prediction.device))
        labels = batch_labels(batch) if self.labels else None
        if labels is not None and labels.shape[0] == n:
            self._label_chunks.append(labels.detach())

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        n = len(self._chunks)
        values = torch.cat(self._chunks) if n else None
        labels = torch.cat(self._label_chunks) if n and len(self._label_chunks) == n else None
        indices = torch.cat(self._indices) if n and len(self._indices) == n else None
        self._chunks, self._label_chunks, self._indices = [], [], []
        if trainer.world_size > 1:
            # Every rank takes part, also one that predicted nothing (a shard can be empty): a rank that
            # returned early would leave the others waiting in the gather.
            values, labels, indices = _gather_predictions(trainer.strategy, values, labels, indices)
        if values is None:
            return
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


#: Largest number of dimensions of a gathered tensor (rows included).
_MAX_DIMS = 6
_DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
)


def _describe(tensor: Tensor | None) -> list[int]:
    """``[present, dtype code, ndim, *shape]`` padded to a fixed length, so that every rank can gather it."""
    if tensor is None:
        return [0] * (3 + _MAX_DIMS)
    if tensor.dim() > _MAX_DIMS or tensor.dtype not in _DTYPES:
        raise ValueError(
            f"PosteriorMeanWriter gathers tensors of at most {_MAX_DIMS} dimensions and dtype in {_DTYPES}, got "
            f"{tuple(tensor.shape)} {tensor.dtype}"
        )
    return [1, _DTYPES.index(tensor.dtype), tensor.dim(), *tensor.shape, *[0] * (_MAX_DIMS - tensor.dim())]


def _gather_predictions(
    strategy: Strategy, values: Tensor | None, labels: Tensor | None, indices: Tensor | None
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """All ranks' rows of ``values``, ``labels`` and ``indices``, concatenated in rank order, on every rank.

    The ranks may hold different numbers of rows (none at all, too). ``strategy.all_gather`` needs tensors
    of one shape on every rank (under NCCL other shapes hang or return garbage), so each rank first
    gathers a fixed-size description (rows, shape, dtype) of its tensors; then each tensor is padded to
    the largest row count, gathered, and every rank's rows are cut back to its own count.

    Raises:
        RuntimeError: On every rank alike, when a rank with rows has no dataset indices (they order the rows),
            or the ranks' rows have different shapes.
    """
    device = strategy.root_device
    local = torch.tensor([_describe(t) for t in (values, labels, indices)], dtype=torch.long, device=device)
    described = strategy.all_gather(local).reshape(-1, 3, 3 + _MAX_DIMS).tolist()  # one host read: (W, 3, ...)
    rows = [int(d[0][3]) if d[0][0] else 0 for d in described]
    if sum(rows) == 0:
        return None, None, None
    with_rows = [d for d, n in zip(described, rows) if n > 0]
    if any(not d[2][0] for d in with_rows):
        raise RuntimeError("PosteriorMeanWriter needs the dataset indices of each batch to merge ranks")
    gathered: list[Tensor | None] = []
    for slot in range(3):
        if any(not d[slot][0] for d in with_rows):  # labels missing on a rank that has rows: written without them
            gathered.append(None)
            continue
        shapes = {tuple(d[slot][3 + 1 : 3 + d[slot][2]]) for d in with_rows}
        dtypes = {d[slot][1] for d in with_rows}
        if len(shapes) != 1 or len(dtypes) != 1:
            raise RuntimeError(f"PosteriorMeanWriter: the ranks predicted rows of different shapes or types: {shapes}")
        tail, dtype = shapes.pop(), _DTYPES[dtypes.pop()]
        mine = (values, labels, indices)[slot]
        padded = torch.zeros((max(rows), *tail), dtype=dtype, device=device)
        if mine is not None and mine.shape[0]:
            padded[: mine.shape[0]] = mine.to(device)
        everyone = strategy.all_gather(padded)  # (W, max rows, *tail)
        gathered.append(torch.cat([everyone[r, :n] for r, n in enumerate(rows)]))
    return gathered[0], gathered[1], gathered[2]
