"""The data modules' loaders pin their batches in page-locked memory where a CUDA device can receive them."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_vae.data.common import make_loader


@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("evaluation", [False, True])
def test_loaders_pin_memory_exactly_when_cuda_is_available(monkeypatch, cuda: bool, evaluation: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    loader = make_loader(TensorDataset(torch.rand(8, 2)), 4, shuffle=not evaluation, evaluation=evaluation)
    assert loader.pin_memory is cuda
