"""Where the tests find the checkout and the real MNIST files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The repository root (the folder holding ``pyproject.toml``).
ROOT = Path(__file__).resolve().parents[2]
#: Real MNIST lives beside the checkout; override with LIGHTNING_VAE_MNIST_DIR.
MNIST_DIR = Path(os.environ.get("LIGHTNING_VAE_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))

#: The four MNIST IDX files a test that reads real MNIST needs.
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def in_ci() -> bool:
    """Whether the tests run in CI: the environment variable ``CI`` is set (and not ``0``/``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_mnist(what: str = "this test") -> Path:
    """The real MNIST folder, for a test that reads it.

    Without the files the test is skipped on a developer's machine, and fails in CI (``CI`` set), where the
    data must be present: a CI run never passes by skipping the MNIST tests.
    """
    missing = [name for name in MNIST_FILES if not (MNIST_DIR / name).is_file()]
    if not missing:
        return MNIST_DIR
    message = (
        f"{what} needs real MNIST in {MNIST_DIR} (missing {', '.join(missing)}); put the four IDX .gz files there "
        "or set LIGHTNING_VAE_MNIST_DIR to their folder"
    )
    if in_ci():
        pytest.fail(f"{message}. CI is set, so the MNIST tests must run", pytrace=False)
    pytest.skip(message)
