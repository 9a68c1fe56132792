"""The versions of torch, lightning and torchmetrics that pyproject.toml requires are at least what every
version-dependent call in the package needs.

Each entry of ``GUARDED`` names a call the package makes, the package and first release that has it (from that
package's release notes and sources), the text by which it is found in the sources, and a check that the installed
package has it. An entry whose text is no longer in the package fails too, so the table follows the code.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import lightning.pytorch.strategies
import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from support.paths import ROOT
from torchmetrics import MeanMetric


class Guarded(NamedTuple):
    package: str
    call: str
    since: tuple[int, ...]
    text: str
    installed: Callable[[], bool]


def _autocast_takes_a_device_type() -> bool:
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:
        return False
    return True


def _mean_metric_without_nan_checks() -> bool:
    try:
        MeanMetric(nan_strategy="disable")
    except ValueError:
        return False
    return True


GUARDED = [
    # functional/math.py turns autocast off around the loss, asking per device type (torch 2.4)
    Guarded(
        "torch",
        "torch.is_autocast_enabled(device_type)",
        (2, 4),
        "torch.is_autocast_enabled(device",
        _autocast_takes_a_device_type,
    ),
    # the aggressive training's own gradient scaler, device-generic (torch 2.3)
    Guarded(
        "torch",
        "torch.amp.GradScaler(device)",
        (2, 3),
        "torch.amp.GradScaler(",
        lambda: hasattr(torch.amp, "GradScaler"),
    ),
    # export/write.py asks for the TorchScript-based ONNX exporter by name (the `dynamo` argument: torch 2.5)
    Guarded(
        "torch",
        "torch.onnx.export(..., dynamo=False)",
        (2, 5),
        "dynamo=False",
        lambda: "dynamo" in inspect.signature(torch.onnx.export).parameters,
    ),
    # the evaluation means and the collapse monitor let NaN into their sums without a host read per update
    # (torchmetrics 1.6.2: "Added `disable` option to `nan_strategy` in basic aggregation metrics", #2943;
    # 1.6.1 refuses it in BaseAggregator.__init__, so every VAE() raised)
    Guarded(
        "torchmetrics",
        'MeanMetric(nan_strategy="disable")',
        (1, 6, 2),
        'nan_strategy="disable"',
        _mean_metric_without_nan_checks,
    ),
    # hooks/faults.py refuses sharding strategies by type (lightning 2.3: "Added `ModelParallelStrategy`", #19878)
    Guarded(
        "lightning",
        "lightning.pytorch.strategies.ModelParallelStrategy",
        (2, 3),
        "ModelParallelStrategy",
        lambda: hasattr(lightning.pytorch.strategies, "ModelParallelStrategy"),
    ),
    # cli/vaecli.py builds `validate/test/predict --ckpt_path` runs from the checkpoint's arguments on top of
    # LightningCLI's own reading of them (lightning 2.5.5: "Fixed `LightningCLI` not using `ckpt_path`
    # hyperparameters to instantiate classes", #21116; before it nothing calls the method and the run has no model:
    # tests/cli/test_cli.py::test_evaluation_without_a_config_uses_the_checkpoints_data fails with lightning 2.3.0,
    # 2.4.0, 2.5.0 and 2.5.4 and passes with 2.5.5, 2.5.6 and 2.6.0, torchmetrics 1.6.2)
    Guarded(
        "lightning",
        "LightningCLI._parse_ckpt_path",
        (2, 5, 5),
        "super()._parse_ckpt_path()",
        lambda: hasattr(LightningCLI, "_parse_ckpt_path"),
    ),
]


def _floor(package: str) -> tuple[int, ...]:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{re.escape(package)}>=(\d+(?:\.\d+)*)', text)
    assert match, f"pyproject.toml names no {package}>=X.Y requirement"
    return tuple(int(part) for part in match.group(1).split("."))


def _sources() -> str:
    return "\n".join(p.read_text() for p in sorted(Path(ROOT, "lightning_vae").rglob("*.py")))


@pytest.mark.parametrize("package", sorted({g.package for g in GUARDED}))
def test_the_floor_covers_every_guarded_call(package: str) -> None:
    floor = _floor(package)
    guarded = [g for g in GUARDED if g.package == package]
    needed = max(g.since for g in guarded)
    assert floor >= needed, f"pyproject.toml allows {package} {floor}, but the package needs {needed}: " + ", ".join(
        g.call for g in guarded if g.since > floor
    )


@pytest.mark.parametrize("guarded", GUARDED, ids=[g.call for g in GUARDED])
def test_each_guarded_call_is_used_and_present_in_the_installed_package(guarded: Guarded) -> None:
    assert guarded.text in _sources(), f"{guarded.call} is no longer used: drop it from the table"
    assert guarded.installed(), f"the installed {guarded.package} lacks {guarded.call}"
