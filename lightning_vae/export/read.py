"""Reading exported files back, and checking them against PyTorch."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_vae.export.build import PARTS, _quiet_tracing, build_graphs, example_context
from lightning_vae.export.graphs import ExportError


def load_exported(path: str | os.PathLike) -> Any:
    """A callable for one exported file: ``f(*inputs) -> outputs`` as tensors (ONNX runs in onnxruntime).

    Raises:
        ValueError: For a file of an unknown kind.
        ImportError: For an ONNX file without onnxruntime installed.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(*inputs: Tensor) -> Any:
            outputs = session.run(None, {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)})
            tensors = [torch.from_numpy(o) for o in outputs]
            return tensors[0] if len(tensors) == 1 else tuple(tensors)

        return run
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        if path.suffix == ".pt":
            return torch.jit.load(str(path))
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
    raise ValueError(f"Expected an exported file ending in .onnx, .pt or .pt2, got {str(path)!r}")


def check_export(
    model: Any, written: dict[str, Path], batch_sizes: Sequence[int] = (1, 3), data_shape: Sequence[int] | None = None
) -> dict[str, float]:
    """Run each exported graph at ``batch_sizes`` and return its largest absolute difference from PyTorch.

    Raises:
        ImportError: For ONNX files without onnxruntime installed.
    """
    parts = [p for p in PARTS if p in written]
    graphs, _, manifest = build_graphs(model, parts, data_shape)
    shape, latent_dim = tuple(manifest["data_shape"]), manifest["latent_dim"]
    generator = torch.Generator().manual_seed(1)
    errors: dict[str, float] = {}
    for part in parts:
        run = load_exported(written[part])
        worst = 0.0
        for n in batch_sizes:
            if part == "encoder":
                inputs: tuple[Tensor, ...] = (torch.rand(n, *shape, generator=generator),)
            else:
                inputs = (torch.randn(n, latent_dim, generator=generator),)
            if "context" in manifest:
                inputs += (example_context(manifest["context"], n, generator),)
            if part == "sampler" and "uniform" in manifest["parts"][part]["inputs"]:
                inputs += (torch.rand(n, generator=generator),)
            with torch.no_grad(), _quiet_tracing():
                expected = graphs[part](*inputs)
                got = run(*inputs)
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = got if isinstance(got, (tuple, list)) else (got,)
            for e, g in zip(expected, got):
                if tuple(e.shape) != tuple(g.shape):
                    raise ExportError(
                        f"The exported {part} gives shape {tuple(g.shape)} at batch {n}, not {tuple(e.shape)}"
                    )
                worst = max(worst, float((e.float() - g.float()).abs().max()))
        errors[part] = worst
    return errors


__all__ = ["check_export", "load_exported"]
