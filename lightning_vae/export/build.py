"""Building the graphs of a model to export: their example inputs and the manifest's record of them."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.adapters import default_validate_args
from lightning_vae.checks import check_shape, choices
from lightning_vae.distributions.posteriors import as_posterior
from lightning_vae.export.graphs import (
    ConditionalDecoderGraph,
    ConditionalEncoderGraph,
    ConditionalSamplerGraph,
    DecoderGraph,
    EncoderGraph,
    ExportError,
    SamplerGraph,
)

#: The export formats; and the graphs a model exports.
ExportFormat = Literal["onnx", "torchscript", "torch_export"]
Part = Literal["encoder", "decoder", "sampler"]

#: Export formats and their file suffixes.
FORMATS: dict[ExportFormat, str] = {"onnx": ".onnx", "torchscript": ".pt", "torch_export": ".pt2"}
#: The graphs written, in this order.
PARTS: tuple[Part, ...] = choices(Part)
#: Batch size of the example inputs the graphs are traced with (2: sizes 0 and 1 are special-cased by tracers).
EXAMPLE_BATCH = 2


def _data_shape(model: Any, data_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = data_shape if data_shape is not None else getattr(model, "data_shape", None)
    if shape is None:
        shape = getattr(getattr(model, "encoder", None), "input_shape", None)
    if shape is None:
        raise ValueError(
            "Cannot tell the shape of one example: the model has no `data_shape` and its encoder no `input_shape`; "
            "pass data_shape (the command's --data_shape, e.g. --data_shape 1 28 28)"
        )
    return check_shape("data_shape", tuple(shape))


def _cpu_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).cpu().float().eval()


def _prior_of(model: Any, x: Tensor) -> Distribution | None:
    """``model.prior_distribution()`` after the model has fixed the sizes it learns from data, in eval mode.

    A model that learns its latent size from the first batch (a standard normal prior without
    ``latent_dim``) does so from ``x``: through its ``fix_shapes(x)`` (``VAE``'s model has it), else one
    ``encode(x)``. The model's mode is restored afterwards.
    """
    if not callable(getattr(model, "prior_distribution", None)):
        return None
    was_training = bool(getattr(model, "training", False))
    parameter = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    fix_shapes = getattr(getattr(model, "model", model), "fix_shapes", None)
    try:
        if isinstance(model, nn.Module):
            model.eval()
        with torch.no_grad():
            if callable(fix_shapes):
                fix_shapes(x.to(device=device, dtype=dtype))
            elif callable(getattr(model, "encode", None)):
                model.encode(x.to(device=device, dtype=dtype))
            prior = model.prior_distribution()
    finally:
        if was_training and isinstance(model, nn.Module):
            model.train()
    return prior  # type: ignore[no-any-return]


def _richer_posterior(model: Any) -> str | None:
    """What the encoder graph leaves out of q(z|x) when the model's posterior is richer than the encoder's Gaussian."""
    inner = getattr(model, "model", model)
    kind = getattr(inner, "posterior_kind", "diagonal")
    if kind == "diagonal":
        return None
    what = "its off-diagonal covariance" if kind == "full_covariance" else f"its {len(inner.flows)} {kind} flow steps"
    return (
        f"loc and log_var are the base Gaussian N(loc, exp(log_var)) of the {kind!r} posterior, without {what}: "
        "q(z|x) itself is not in this graph (loc serves as an embedding of x; sample q(z|x) with the PyTorch model)"
    )


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """No argument validation in distributions (its checks branch on data) and no exporter deprecation notes."""
    previous = default_validate_args()
    Distribution.set_default_validate_args(False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        Distribution.set_default_validate_args(previous)


def context_spec(model: Any) -> dict[str, Any] | None:
    """What the graphs of a conditional model take as ``context``: ``{"size", "kind"}``, or ``None`` (unconditional).

    ``kind`` is ``"one_hot"`` (one-hot rows of the class, a model conditional on labels) or ``"features"``.

    Raises:
        ExportError: For a conditional model whose context size cannot be told.
    """
    inner = getattr(model, "model", model)
    if not getattr(inner, "conditional", False):
        return None
    n_classes = getattr(inner, "n_classes", None)
    if isinstance(n_classes, int):
        return {"size": n_classes, "kind": "one_hot"}
    size = getattr(getattr(inner, "encoder", None), "context_dim", None)
    if not isinstance(size, int) or not callable(getattr(inner, "code", None)):
        raise ExportError(
            f"Cannot tell the context size of the conditional model {type(inner).__name__}: give its encoder a "
            "`context_dim` attribute"
        )
    return {"size": size, "kind": "features"}


def example_context(spec: dict[str, Any], n: int, generator: torch.Generator) -> Tensor:
    """``n`` example contexts of ``spec`` (:func:`context_spec`): one-hot rows of random classes, or normal features."""
    if spec["kind"] == "one_hot":
        return torch.eye(spec["size"])[torch.randint(spec["size"], (n,), generator=generator)]
    return torch.randn(n, spec["size"], generator=generator)


def build_graphs(
    model: Any, parts: Sequence[str] = PARTS, data_shape: Sequence[int] | None = None
) -> tuple[dict[str, nn.Module], dict[str, tuple[Tensor, ...]], dict[str, Any]]:
    """The graphs to export, their example inputs, and what the manifest records.

    Raises:
        ExportError: For an autoregressive decoder (decoder, sampler) or a prior the sampler cannot map.
        TypeError: If ``parts`` is not a sequence of names, or the model lacks a network.
        ValueError: For unknown parts or an unknown data shape.
    """
    if isinstance(parts, str) or not isinstance(parts, Sequence):
        raise TypeError(f"Expected `parts` to be a sequence of names from {PARTS}, got {parts!r}")
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"Expected `parts` to be a non-empty sequence of names from {PARTS}, got {list(parts)}")
    for name in ("encoder", "decoder", "likelihood"):
        if not isinstance(getattr(model, name, None), nn.Module):
            raise TypeError(f"Expected a model with an `{name}` module (as VAE has), got {type(model).__name__}")
    decoder_parts = [p for p in parts if p != "encoder"]
    if decoder_parts and bool(getattr(model.decoder, "autoregressive", False)):
        raise ExportError(
            f"The decoder {type(model.decoder).__name__} is autoregressive: it needs the data x to decode and one "
            "decoder pass per pixel to sample, which an exported graph cannot hold. Only its encoder exports "
            "(parts=['encoder'], or --parts encoder)"
        )
    shape = _data_shape(model, data_shape)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(EXAMPLE_BATCH, *shape, generator=generator)
    spec = context_spec(model)
    # The context input of every graph of a conditional model, after the data, noise or latent.
    context: tuple[Tensor, ...] = () if spec is None else (example_context(spec, EXAMPLE_BATCH, generator),)
    # The graphs hold float32 CPU copies in eval mode: the model itself is left as it was.
    inner = _cpu_copy(getattr(model, "model", model)) if spec is not None else None
    encoder = (EncoderGraph(_cpu_copy(model.encoder)) if inner is None else ConditionalEncoderGraph(inner)).eval()
    with torch.no_grad(), _quiet_tracing():
        try:
            as_posterior(encoder.encoder(x, *context))  # the encoder's output checked once, outside tracing
            loc, _ = encoder(x, *context)
        except Exception as err:  # noqa: BLE001 - reported with what was tried
            raise ValueError(f"The encoder does not take examples of shape {shape}: {err}") from err
    latent_dim = int(loc.shape[-1])
    decoder: nn.Module = (
        DecoderGraph(_cpu_copy(model.decoder), _cpu_copy(model.likelihood))
        if inner is None
        else ConditionalDecoderGraph(inner)
    ).eval()
    noise = torch.randn(EXAMPLE_BATCH, latent_dim, generator=generator)
    graphs: dict[str, nn.Module] = {}
    examples: dict[str, tuple[Tensor, ...]] = {}
    manifest: dict[str, Any] = {"data_shape": list(shape), "latent_dim": latent_dim, "parts": {}}
    context_io: dict[str, Any] = {} if spec is None else {"context": ["batch", spec["size"]]}
    if spec is not None:
        manifest["context"] = {
            **spec,
            "note": "one-hot rows of the class (float)" if spec["kind"] == "one_hot" else "the feature vector (float)",
        }
    for part in parts:
        io: dict[str, Any]
        if part == "encoder":
            graphs[part], examples[part] = encoder, (x, *context)
            io = {"inputs": {"x": ["batch", *shape], **context_io}, "outputs": {"loc": ["batch", latent_dim]}}
            io["outputs"]["log_var"] = ["batch", latent_dim]
            richer = _richer_posterior(model)
            if richer is not None:
                io["note"] = richer
                name = type(getattr(model, "model", model)).__name__
                warnings.warn(f"Exporting the encoder of {name}: {richer}", stacklevel=2)
        elif part == "decoder":
            graphs[part], examples[part] = decoder, (noise, *context)
            io = {"inputs": {"z": ["batch", latent_dim], **context_io}, "outputs": {"mean": ["batch", *shape]}}
        else:
            prior = _prior_of(model, x)
            if prior is None:
                raise ExportError(
                    f"{type(model).__name__} has no `prior_distribution()`; export --parts encoder decoder"
                )
            sampler: Any = SamplerGraph(decoder, prior).eval()
            if inner is not None:
                sampler = ConditionalSamplerGraph(sampler, decoder).eval()  # type: ignore[arg-type]
            graphs[part] = sampler
            io = {"inputs": {"noise": ["batch", latent_dim], **context_io}, "outputs": {"sample": ["batch", *shape]}}
            if sampler.mixture:
                examples[part] = (noise, *context, torch.rand(EXAMPLE_BATCH, generator=generator))
                io["inputs"]["uniform"] = ["batch"]
                io["note"] = "noise ~ N(0, I); uniform ~ U[0, 1) picks the mixture component"
            else:
                examples[part] = (noise, *context)
                io["note"] = "noise ~ N(0, I)"
        manifest["parts"][part] = io
    return graphs, examples, manifest


__all__ = [
    "EXAMPLE_BATCH",
    "FORMATS",
    "PARTS",
    "ExportFormat",
    "Part",
    "build_graphs",
    "context_spec",
    "example_context",
]
