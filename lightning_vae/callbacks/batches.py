"""What the callbacks read from a batch of any module: its data tensor and, when it has them, its labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lightning_vae.utilities import batch_data

__all__ = ["LABEL_KEYS", "batch_labels", "unpack_data"]

#: Dict keys searched for labels in a dict batch, in this order.
LABEL_KEYS = ("y", "label", "labels", "target", "targets", "factors")


def unpack_data(pl_module: Any, batch: Any) -> Tensor | None:
    """The data tensor of a batch (:func:`~lightning_vae.utilities.batch_data`), or ``None`` when it has none.

    Example::

        >>> import torch
        >>> unpack_data(object(), (torch.zeros(2, 3), torch.ones(2))).shape, unpack_data(object(), "text")
        (torch.Size([2, 3]), None)
    """
    try:
        x = batch_data(pl_module, batch)
    except (TypeError, ValueError):
        return None
    return x if isinstance(x, Tensor) else None


def batch_labels(batch: Any) -> Tensor | None:
    """The labels or factors of a batch: the second element of an ``(x, y)`` batch, or the first tensor under
    :data:`LABEL_KEYS` of a dict batch; ``None`` when there are none.

    Example::

        >>> import torch
        >>> batch_labels((torch.zeros(2, 3), torch.tensor([4, 5]))), batch_labels({"x": torch.zeros(2, 3)})
        (tensor([4, 5]), None)
    """
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and isinstance(batch[1], Tensor):
        return batch[1]
    if isinstance(batch, Mapping):
        for key in LABEL_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    return None
