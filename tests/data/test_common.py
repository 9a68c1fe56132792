"""data/common.py: ``read_batch``, the one place that finds the data and context of a batch; loaders that pin memory
exactly when a CUDA device can receive the batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_vae.data import BATCH_KEYS, CONTEXT_KEYS, Batch, read_batch
from lightning_vae.data.common import make_loader
from lightning_vae.utilities import batch_data


def test_tensor_sequence_and_dict_batches() -> None:
    x, y = torch.rand(4, 3), torch.arange(4)
    assert read_batch(x).x is x
    assert read_batch((x, y)).x is x
    assert read_batch([x, y, "meta"]).x is x
    for key in BATCH_KEYS:
        assert read_batch({key: x, "label": y}).x is x


def test_the_context_is_the_second_element_or_the_first_context_key() -> None:
    x, y, c = torch.rand(4, 3), torch.arange(4), torch.rand(4, 2)
    assert read_batch(x).context is None and read_batch([x]).context is None
    assert read_batch((x, y)).context is y and read_batch([x, "meta"]).context is None
    for key in CONTEXT_KEYS:
        assert read_batch({"x": x, key: y}).context is y
    assert read_batch({"x": x, "label": y, "context": c}).context is c  # "context" comes first
    assert read_batch({"x": x, "factors": c}).context is None  # factors are for the metrics, not the model
    batch = Batch(x, y)
    assert read_batch(batch) is batch


def test_dict_keys_are_searched_in_order_and_must_hold_a_tensor() -> None:
    a, b = torch.zeros(2), torch.ones(2)
    assert read_batch({"data": b, "x": a}).x is a  # "x" comes first in BATCH_KEYS
    assert read_batch({"x": "not a tensor", "image": b}).x is b


def test_dict_without_data_is_a_value_error_naming_the_keys() -> None:
    with pytest.raises(ValueError, match=r"got keys \['foo', 'label'\]"):
        read_batch({"label": torch.zeros(1), "foo": torch.zeros(1)})
    with pytest.raises(ValueError, match="got keys"):
        read_batch({1: torch.zeros(1), "a": torch.zeros(1)})  # keys of mixed types still listed


@pytest.mark.parametrize("batch", ["nope", None, 3, (), [], ("x", torch.zeros(1))])
def test_other_batches_are_a_type_error(batch: object) -> None:
    with pytest.raises(TypeError, match="Expected a batch that is a tensor"):
        read_batch(batch)


def test_batch_data_prefers_the_module_method_then_falls_back() -> None:
    x = torch.rand(2, 3)

    class Own:
        def read_batch(self, batch: dict[str, torch.Tensor]) -> Batch:
            return Batch(batch["pixels"])

    assert batch_data(Own(), {"pixels": x}) is x
    assert batch_data(object(), {"image": x}) is x
    with pytest.raises(TypeError, match="give the module a `read_batch"):
        batch_data(object(), "nope")
    with pytest.raises(ValueError, match="got keys"):
        batch_data(object(), {"pixels": x})


# The data modules' loaders pin their batches in page-locked memory where a CUDA device can receive them.
@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("evaluation", [False, True])
def test_loaders_pin_memory_exactly_when_cuda_is_available(monkeypatch, cuda: bool, evaluation: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    loader = make_loader(TensorDataset(torch.rand(8, 2)), 4, shuffle=not evaluation, evaluation=evaluation)
    assert loader.pin_memory is cuda
