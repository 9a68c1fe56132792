"""What the callbacks read from a batch of any module: the data tensor, and the labels or factors when there are."""

from __future__ import annotations

import torch

from lightning_vae.callbacks.batches import LABEL_KEYS, batch_labels
from lightning_vae.data import Batch
from lightning_vae.utilities import batch_data


class Unpacks:
    """A module with its own ``read_batch``: the data are under "pixels"."""

    def read_batch(self, batch):
        return Batch(batch["pixels"])


def test_the_data_come_from_the_module_or_the_common_layouts() -> None:
    x, y = torch.rand(4, 1, 2, 2), torch.arange(4)
    assert batch_data(object(), x, optional=True) is x
    assert batch_data(object(), (x, y), optional=True) is x and batch_data(object(), [x], optional=True) is x
    assert batch_data(object(), {"x": x, "y": y}, optional=True) is x
    assert batch_data(Unpacks(), {"pixels": x}, optional=True) is x
    for no_data in ("text", 3, (None, y), {"y": y}):  # nothing to draw: None, not an error
        assert batch_data(object(), no_data, optional=True) is None


def test_labels_are_the_second_element_or_the_first_label_key() -> None:
    x, y, factors = torch.rand(4, 3), torch.arange(4), torch.zeros(4, 5)
    assert batch_labels((x, y)) is y and batch_labels([x, factors]) is factors
    assert batch_labels({"x": x, "factors": factors, "y": y}) is y  # "y" comes before "factors"
    assert batch_labels({"x": x, "factors": factors}) is factors
    assert LABEL_KEYS.index("y") < LABEL_KEYS.index("factors")
    for unlabelled in (x, (x,), (x, "label"), {"x": x}, {"y": [1, 2]}):
        assert batch_labels(unlabelled) is None
