"""Makes the packages a GPU machine lacks look absent, for `bash benchmarks/gpu_check.sh --dry-run`.

The GPU machine has torch, lightning, torchmetrics, onnx, scipy and hypothesis, and not hydra-core, omegaconf or
jsonargparse. The dry run puts this folder first on ``PYTHONPATH``, so every Python process it starts (pytest, the
benchmark scripts, their spawned workers) imports this module at start-up: importing those packages then fails, and
their distributions are not found (Lightning asks for jsonargparse's version before importing it), as there.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from importlib.metadata import Distribution, PackageNotFoundError
from types import ModuleType
from typing import Any

MODULES = ("hydra", "omegaconf", "jsonargparse")
DISTRIBUTIONS = ("hydra-core", "omegaconf", "jsonargparse")


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.split(".")[0] in MODULES:
            raise ModuleNotFoundError(f"No module named {fullname!r} (absent in the rehearsal)", name=fullname)
        return None

    def find_distributions(self, context: Any = None) -> Iterator[Distribution]:
        name = getattr(context, "name", None)
        if name is not None and name.lower().replace("_", "-") in DISTRIBUTIONS:
            raise PackageNotFoundError(name)
        return iter(())


sys.meta_path.insert(0, _Absent())
