"""Shared fixtures: the real MNIST folder and a fixed seed. Shared code lives in support/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.modules import tiny_vae, trainer_kwargs  # noqa: F401  (re-exported for convenience)
from support.paths import MNIST_DIR


@pytest.fixture
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found in {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
