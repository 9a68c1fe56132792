"""Writing the graphs as ONNX, TorchScript or ``torch.export`` files, with their manifest."""

from __future__ import annotations

import json
import linecache
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_vae.checks import check_choice, check_int, check_type
from lightning_vae.export.build import FORMATS, PARTS, ExportFormat, _quiet_tracing, build_graphs
from lightning_vae.export.graphs import ExportError


def _export_one(
    graph: nn.Module,
    example: tuple[Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    path: Path,
    fmt: str,
    opset: int,
) -> None:
    if fmt == "onnx":
        axes = {name: {0: "batch"} for name in [*inputs, *outputs]}
        torch.onnx.export(
            graph,
            example,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    elif fmt == "torchscript":
        traced = torch.jit.trace(graph, example, check_trace=False)
        torch.jit.save(traced, str(path))
    else:
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(graph, example, dynamic_shapes={name: {0: batch} for name in inputs})
        torch.export.save(program, str(path))


def _report_tracer_warnings(caught: list[warnings.WarningMessage], what: str, fmt: str) -> None:
    """Pass on what tracing warned about, except checks of shapes (fixed in a graph of one data shape).

    A Python branch on tensor values is recorded as the branch the example input took; such a
    warning is passed on naming the part. Shape checks (``if x.shape[1:] != ...``) warn the same way
    but hold for every input of the data shape, and a batch-size dependence shows in
    :func:`check_export`, which runs the files at other batch sizes.
    """
    for record in caught:
        if not issubclass(record.category, torch.jit.TracerWarning):
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
            continue
        line = linecache.getline(record.filename, record.lineno)
        if any(token in line for token in (".shape", ".size(", ".dim()", ".ndim")):
            continue
        warnings.warn(
            f"Exporting the {what} as {fmt}: {str(record.message).rstrip('.!')} (at {record.filename}:"
            f"{record.lineno}). A traced graph keeps the branch the example input took; check the exported file on "
            "your data",
            UserWarning,
            stacklevel=3,
        )


def export_model(
    model: Any,
    output_dir: str | os.PathLike,
    format: ExportFormat = "onnx",
    parts: Sequence[str] = PARTS,
    data_shape: Sequence[int] | None = None,
    opset: int = 17,
) -> dict[str, Path]:
    """Write the encoder, decoder and sampler graphs of ``model`` (a :class:`~lightning_vae.VAE`) to ``output_dir``.

    The graphs hold float32 CPU copies of the networks in eval mode, so a model on a GPU or in training
    mode can be exported as it is and is left unchanged; every graph takes any batch size.

    Args:
        model: A VAE (anything with ``encoder``, ``decoder``, ``likelihood`` and ``prior_distribution()``).
        output_dir: Folder to write to (created).
        format: ``"onnx"``, ``"torchscript"`` or ``"torch_export"``.
        parts: Which graphs: any of ``"encoder"``, ``"decoder"``, ``"sampler"``.
        data_shape: Shape of one example, when neither the model nor its encoder records it.
        opset: ONNX opset version.

    Returns:
        The path of each graph by part, and ``"manifest"``.

    Raises:
        TypeError: For arguments of the wrong type, or a model without an encoder, decoder or likelihood.
        ValueError: For an unknown format or part, an opset below 7, or an unknown data shape.
        ExportError: For a part that cannot be exported (an autoregressive decoder, a prior the sampler
            cannot map, or an exporter failure), naming the part and the network.

    Example::

        >>> import tempfile
        >>> from lightning_vae import VAE
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> vae = VAE(MLPEncoder((1, 4, 4), latent_dim=2), MLPDecoder(2, (1, 4, 4)))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     sorted(p.name for p in export_model(vae, folder, "torchscript").values())
        ['decoder.pt', 'encoder.pt', 'manifest.json', 'sampler.pt']
    """
    check_choice("format", format, ExportFormat)
    check_type("output_dir", output_dir, (str, os.PathLike), "a folder path")
    check_int("opset", opset, low=7)
    if format == "onnx":
        try:
            import onnx  # noqa: F401 - PyTorch's ONNX exporter writes its files through it
        except ImportError as err:
            raise ExportError(
                "ONNX export needs the `onnx` package: pip install onnx (and onnxruntime to run the files); "
                "--format torchscript or torch_export need nothing beyond torch"
            ) from err
    graphs, examples, manifest = build_graphs(model, parts, data_shape)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for part, graph in graphs.items():
        io = manifest["parts"][part]
        path = folder / f"{part}{FORMATS[format]}"
        network = type(model.encoder if part == "encoder" else model.decoder).__name__
        try:
            with torch.no_grad(), _quiet_tracing(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", torch.jit.TracerWarning)
                _export_one(graph, examples[part], list(io["inputs"]), list(io["outputs"]), path, format, opset)
        except Exception as err:  # noqa: BLE001 - the exporters raise many types; one clear message
            lines = [line.strip() for line in str(err).splitlines() if line.strip()][:2]
            raise ExportError(
                f"Cannot export the {part} ({network}) as {format}: {type(err).__name__}: {' '.join(lines)}"
            ) from err
        _report_tracer_warnings(caught, f"{part} ({network})", format)
        io["file"] = path.name
        written[part] = path
    manifest.update({"format": format, "torch": torch.__version__, "batch": "dynamic (any size >= 1)"})
    if format == "onnx":
        manifest["opset"] = opset
    manifest_path = folder / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    written["manifest"] = manifest_path
    return written


__all__ = ["export_model"]
