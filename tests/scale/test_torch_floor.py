"""The torch version that pyproject.toml requires is at least what every version-dependent call in the package needs.

Each entry of ``GUARDED`` names a call the package makes, the first torch release that has it (from the
PyTorch release notes), the text by which it is found in the sources, and a check that the installed torch
has it. An entry whose text is no longer in the package fails too, so the table follows the code.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from support.paths import ROOT


class Guarded(NamedTuple):
    call: str
    since: tuple[int, int]
    text: str
    installed: Callable[[], bool]


def _autocast_takes_a_device_type() -> bool:
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:
        return False
    return True


GUARDED = [
    # objective.py turns autocast off around the loss, asking per device type (torch 2.4)
    Guarded(
        "torch.is_autocast_enabled(device_type)",
        (2, 4),
        "torch.is_autocast_enabled(device",
        _autocast_takes_a_device_type,
    ),
    # the aggressive training's own gradient scaler, device-generic (torch 2.3)
    Guarded("torch.amp.GradScaler(device)", (2, 3), "torch.amp.GradScaler(", lambda: hasattr(torch.amp, "GradScaler")),
    # export/write.py asks for the TorchScript-based ONNX exporter by name (the `dynamo` argument: torch 2.5)
    Guarded(
        "torch.onnx.export(..., dynamo=False)",
        (2, 5),
        "dynamo=False",
        lambda: "dynamo" in inspect.signature(torch.onnx.export).parameters,
    ),
]


def _floor() -> tuple[int, int]:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert match, "pyproject.toml names no torch>=X.Y requirement"
    return int(match.group(1)), int(match.group(2))


def _sources() -> str:
    return "\n".join(p.read_text() for p in sorted(Path(ROOT, "lightning_vae").rglob("*.py")))


def test_the_floor_covers_every_guarded_call() -> None:
    floor = _floor()
    needed = max(g.since for g in GUARDED)
    assert floor >= needed, f"pyproject.toml allows torch {floor}, but the package needs {needed}: " + ", ".join(
        g.call for g in GUARDED if g.since > floor
    )


@pytest.mark.parametrize("guarded", GUARDED, ids=[g.call for g in GUARDED])
def test_each_guarded_call_is_used_and_present_in_the_installed_torch(guarded: Guarded) -> None:
    assert guarded.text in _sources(), f"{guarded.call} is no longer used: drop it from the table"
    assert guarded.installed(), f"the installed torch {torch.__version__} lacks {guarded.call}"
