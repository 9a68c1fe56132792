"""Export a trained VAE for deployment: encoder, decoder and sampler as ONNX, TorchScript or ``torch.export`` files.

Three graphs, each with a dynamic batch dimension:

- ``encoder``: ``x (B, *data_shape) -> loc (B, D), log_var (B, D)``, the parameters of q(z|x) (for an
  encoder that returns another distribution: its mean and the log of its variance);
- ``decoder``: ``z (B, D) -> mean (B, *data_shape)``, the likelihood mean (what ``VAE.reconstruct``
  and ``VAE.sample`` show);
- ``sampler``: ``noise (B, D) -> sample (B, *data_shape)``, with ``noise ~ N(0, I)`` mapped through the
  prior: ``z = noise`` for the standard normal, ``z = loc + scale * noise`` for a learned Gaussian.
  For a mixture prior (``"mixture"``, ``"vamp"``) the sampler takes a second input ``uniform (B,)``
  in [0, 1) that picks the component by the inverse of its cumulative weights.

Files: ``encoder.onnx``, ``decoder.onnx``, ``sampler.onnx`` (or ``.pt`` for TorchScript, ``.pt2`` for
``torch.export``) and ``manifest.json`` (shapes, input and output names, how to feed the sampler).
ONNX goes through PyTorch's TorchScript-based exporter, which needs the ``onnx`` package (and
``onnxruntime`` to run or check the files); TorchScript and ``torch.export`` need nothing beyond torch.
TorchScript files load with ``torch.jit.load``, ``.pt2`` files with ``torch.export.load(path).module()``.

An autoregressive decoder (e.g. :class:`~lightning_vae.nets.PixelCNNDecoder`) needs the data to
decode and one pass per pixel to sample, which these graphs cannot hold: only its encoder exports.

From the command line::

    lightning-vae export --ckpt_path last.ckpt --format onnx --output exported/
"""

from __future__ import annotations

import contextlib
import copy
import json
import linecache
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MixtureSameFamily, Normal

from lightning_vae.distributions.posteriors import LOG_VAR_RANGE, DiagonalGaussian, as_posterior
from lightning_vae.functional.math import soft_clamp

__all__ = [
    "FORMATS",
    "PARTS",
    "DecoderGraph",
    "EncoderGraph",
    "ExportError",
    "SamplerGraph",
    "check_export",
    "export_model",
    "load_exported",
]

#: Export formats and their file suffixes.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "torch_export": ".pt2"}
#: The graphs written, in this order.
PARTS = ("encoder", "decoder", "sampler")
#: Batch size of the example inputs the graphs are traced with (2: sizes 0 and 1 are special-cased by tracers).
EXAMPLE_BATCH = 2


class ExportError(RuntimeError):
    """A model, or a part of it, that cannot be exported; the message says which part and why."""


# ---------------------------------------------------------------------------------------- the graphs
class EncoderGraph(nn.Module):
    """``x -> (loc, log_var)`` of q(z|x), as :meth:`VAE.encode` gives them (the log-variance soft-clamped).

    Example::

        >>> import torch
        >>> from lightning_vae.nets import MLPEncoder
        >>> loc, log_var = EncoderGraph(MLPEncoder((1, 4, 4), latent_dim=3))(torch.rand(5, 1, 4, 4))
        >>> loc.shape, log_var.shape
        (torch.Size([5, 3]), torch.Size([5, 3]))
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.encoder(x)
        if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out):
            # What DiagonalGaussian computes from (loc, log_var), without its shape checks (they would be traced).
            return out[0].float(), soft_clamp(out[1].float(), *LOG_VAR_RANGE)
        q = as_posterior(out)
        if isinstance(q, DiagonalGaussian):
            return q.loc, q.log_var
        return q.mean, q.variance.log()


class DecoderGraph(nn.Module):
    """``z -> likelihood mean``: the decoder followed by the likelihood's mean (data space).

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import BernoulliLikelihood
        >>> from lightning_vae.nets import MLPDecoder
        >>> DecoderGraph(MLPDecoder(3, (1, 4, 4)), BernoulliLikelihood())(torch.zeros(2, 3)).shape
        torch.Size([2, 1, 4, 4])
    """

    def __init__(self, decoder: nn.Module, likelihood: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.likelihood = likelihood

    def forward(self, z: Tensor) -> Tensor:
        return self.likelihood.mean(self.decoder(z))  # type: ignore[operator,no-any-return]


def _gaussian_parts(p: Distribution) -> tuple[Tensor, Tensor] | None:
    """``(loc, scale)`` of a diagonal Gaussian over vectors, else ``None``."""
    if isinstance(p, DiagonalGaussian):
        return p.loc, p.base_dist.scale
    if isinstance(p, Independent) and isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1:
        return p.base_dist.loc, p.base_dist.scale
    return None


class SamplerGraph(nn.Module):
    """``noise (B, D) [, uniform (B,)] -> sample``: standard normal noise through the prior, then the decoder graph.

    The prior's parameters are read once, when the graph is built, and held as constants.

    Args:
        decoder: The :class:`DecoderGraph`.
        prior: The prior as a distribution with event shape ``(D,)``: a diagonal Gaussian, or a
            ``MixtureSameFamily`` of diagonal Gaussians (then ``forward`` also takes ``uniform``).

    Raises:
        ExportError: For any other prior.

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import BernoulliLikelihood, DiagonalGaussian
        >>> from lightning_vae.nets import MLPDecoder
        >>> decoder = DecoderGraph(MLPDecoder(3, (1, 4, 4)), BernoulliLikelihood())
        >>> sampler = SamplerGraph(decoder, DiagonalGaussian(torch.zeros(3), torch.zeros(3)))
        >>> sampler(torch.randn(6, 3)).shape, sampler.mixture
        (torch.Size([6, 1, 4, 4]), False)
    """

    loc: Tensor
    scale: Tensor
    cdf: Tensor

    def __init__(self, decoder: DecoderGraph, prior: Distribution) -> None:
        super().__init__()
        self.decoder = decoder
        gaussian = _gaussian_parts(prior)
        if gaussian is not None:
            loc, scale = (t.detach().float().reshape(1, -1) for t in gaussian)
            self.mixture = False
            self.register_buffer("loc", loc.clone())
            self.register_buffer("scale", scale.clone())
            return
        if isinstance(prior, MixtureSameFamily):
            components = _gaussian_parts(prior.component_distribution)
            if components is not None and components[0].dim() == 2:
                probs = prior.mixture_distribution.probs.detach().float()
                cdf = probs.cumsum(0) / probs.sum()
                self.mixture = True
                self.register_buffer("loc", components[0].detach().float().clone())  # (K, D)
                self.register_buffer("scale", components[1].detach().float().clone())
                self.register_buffer("cdf", cdf[:-1].clone())  # the K - 1 inner boundaries
                return
        raise ExportError(
            f"Cannot export a sampler for the prior {type(prior).__name__}: the sampler maps standard normal noise "
            "through a diagonal Gaussian or a mixture of diagonal Gaussians. Export --parts encoder decoder and draw "
            "z from the prior yourself"
        )

    def latent(self, noise: Tensor, uniform: Tensor | None = None) -> Tensor:
        """The latent ``z (B, D)`` the noise stands for."""
        if not self.mixture:
            return self.loc + self.scale * noise
        if uniform is None:
            raise ValueError("The sampler of a mixture prior needs `uniform` (B,) in [0, 1) to pick the components")
        index = (uniform.unsqueeze(-1) >= self.cdf).long().sum(-1)  # (B,): the component whose interval holds u
        return self.loc[index] + self.scale[index] * noise

    def forward(self, noise: Tensor, uniform: Tensor | None = None) -> Tensor:
        return self.decoder(self.latent(noise, uniform))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------- building
def _data_shape(model: Any, data_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = data_shape if data_shape is not None else getattr(model, "data_shape", None)
    if shape is None:
        shape = getattr(getattr(model, "encoder", None), "input_shape", None)
    if shape is None:
        raise ValueError(
            "Cannot tell the shape of one example: the model has no `data_shape` and its encoder no `input_shape`; "
            "pass data_shape (the command's --data_shape, e.g. --data_shape 1 28 28)"
        )
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"Expected `data_shape` of positive sizes, got {shape}")
    return shape


def _cpu_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).cpu().float().eval()


def _prior_of(model: Any, x: Tensor) -> Distribution | None:
    """``model.prior_distribution()`` on CPU in float32, after one ``encode`` in eval mode where the model has it.

    ``VAE`` learns the size of a standard normal prior from the first batch it encodes; the model's
    mode is restored afterwards, and nothing of it is changed.
    """
    if not callable(getattr(model, "prior_distribution", None)):
        return None
    was_training = bool(getattr(model, "training", False))
    parameter = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    try:
        if isinstance(model, nn.Module):
            model.eval()
        with torch.no_grad():
            if callable(getattr(model, "encode", None)):
                model.encode(x.to(device=device, dtype=dtype))
            prior = model.prior_distribution()
    finally:
        if was_training and isinstance(model, nn.Module):
            model.train()
    return prior  # type: ignore[no-any-return]


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """No argument validation in distributions (its checks branch on data) and no exporter deprecation notes."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        Distribution.set_default_validate_args(previous)


def build_graphs(
    model: Any, parts: Sequence[str] = PARTS, data_shape: Sequence[int] | None = None
) -> tuple[dict[str, nn.Module], dict[str, tuple[Tensor, ...]], dict[str, Any]]:
    """The graphs to export, their example inputs, and what the manifest records.

    Raises:
        ExportError: For an autoregressive decoder (decoder, sampler) or a prior the sampler cannot map.
        ValueError: For unknown parts or an unknown data shape.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f"Expected `parts` from {PARTS}, got {list(parts)}")
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
    # The graphs hold float32 CPU copies in eval mode: the model itself is left as it was.
    encoder = EncoderGraph(_cpu_copy(model.encoder)).eval()
    with torch.no_grad(), _quiet_tracing():
        try:
            as_posterior(encoder.encoder(x))  # the encoder's output checked once, outside tracing
            loc, _ = encoder(x)
        except Exception as err:  # noqa: BLE001 - reported with what was tried
            raise ValueError(f"The encoder does not take examples of shape {shape}: {err}") from err
    latent_dim = int(loc.shape[-1])
    decoder = DecoderGraph(_cpu_copy(model.decoder), _cpu_copy(model.likelihood)).eval()
    noise = torch.randn(EXAMPLE_BATCH, latent_dim, generator=generator)
    graphs: dict[str, nn.Module] = {}
    examples: dict[str, tuple[Tensor, ...]] = {}
    manifest: dict[str, Any] = {"data_shape": list(shape), "latent_dim": latent_dim, "parts": {}}
    for part in parts:
        io: dict[str, Any]
        if part == "encoder":
            graphs[part], examples[part] = encoder, (x,)
            io = {"inputs": {"x": ["batch", *shape]}, "outputs": {"loc": ["batch", latent_dim]}}
            io["outputs"]["log_var"] = ["batch", latent_dim]
        elif part == "decoder":
            graphs[part], examples[part] = decoder, (noise,)
            io = {"inputs": {"z": ["batch", latent_dim]}, "outputs": {"mean": ["batch", *shape]}}
        else:
            prior = _prior_of(model, x)
            if prior is None:
                raise ExportError(
                    f"{type(model).__name__} has no `prior_distribution()`; export --parts encoder decoder"
                )
            sampler = SamplerGraph(decoder, prior).eval()
            graphs[part] = sampler
            io = {"inputs": {"noise": ["batch", latent_dim]}, "outputs": {"sample": ["batch", *shape]}}
            if sampler.mixture:
                examples[part] = (noise, torch.rand(EXAMPLE_BATCH, generator=generator))
                io["inputs"]["uniform"] = ["batch"]
                io["note"] = "noise ~ N(0, I); uniform ~ U[0, 1) picks the mixture component"
            else:
                examples[part] = (noise,)
                io["note"] = "noise ~ N(0, I)"
        manifest["parts"][part] = io
    return graphs, examples, manifest


# ---------------------------------------------------------------------------------------- writing
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
    format: str = "onnx",
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
        ValueError: For an unknown format or part, or an unknown data shape.
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
    if format not in FORMATS:
        raise ValueError(f"Expected `format` to be one of {tuple(FORMATS)}, got {format!r}")
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


# ---------------------------------------------------------------------------------------- reading back
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
