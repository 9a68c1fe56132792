"""Shared fixtures: the real MNIST folder and a fixed seed. Shared code lives in support/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.modules import tiny_vae, trainer_kwargs  # noqa: F401  (re-exported for convenience)
from support.paths import require_mnist

#: Test modules that import Hydra at the top: left out where hydra-core is not installed (the GPU check's machine).
HYDRA_MODULES = ["faults/test_cli_errors.py", "faults/test_hostile_configs.py", "objective/test_base.py"]
try:
    import hydra  # noqa: F401
except ImportError:  # pragma: no cover - exercised by benchmarks/gpu_check.sh --dry-run
    collect_ignore = HYDRA_MODULES


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST folder; without it the test skips, or fails in CI (see ``support.paths.require_mnist``)."""
    return require_mnist()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
