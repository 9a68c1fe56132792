"""Where the tests find the checkout and the real MNIST files."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the folder holding ``pyproject.toml``).
ROOT = Path(__file__).resolve().parents[2]
#: Real MNIST lives beside the checkout; override with LIGHTNING_VAE_MNIST_DIR.
MNIST_DIR = Path(os.environ.get("LIGHTNING_VAE_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
