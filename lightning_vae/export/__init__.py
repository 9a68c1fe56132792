"""Export a trained VAE for deployment: encoder, decoder and sampler as ONNX, TorchScript or ``torch.export`` files.

Three graphs, each with a dynamic batch dimension:

- ``encoder``: ``x (B, *data_shape) -> loc (B, D), log_var (B, D)``, the parameters of q(z|x) (for an
  encoder that returns another distribution: its mean and the log of its variance; for a
  :class:`~lightning_vae.models.FlowVAEModel` with flows or a full covariance: the encoder's base Gaussian,
  which the manifest's ``note`` and a warning say);
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

Modules: :mod:`~lightning_vae.export.graphs` (the three graphs), :mod:`~lightning_vae.export.build` (building
them from a model), :mod:`~lightning_vae.export.write` (the files and manifest) and
:mod:`~lightning_vae.export.read` (loading and checking the files); everything is importable from here.
"""

from __future__ import annotations

from lightning_vae.export.build import EXAMPLE_BATCH, FORMATS, PARTS, ExportFormat, Part, build_graphs
from lightning_vae.export.graphs import DecoderGraph, EncoderGraph, ExportError, SamplerGraph
from lightning_vae.export.read import check_export, load_exported
from lightning_vae.export.write import export_model

__all__ = [
    "EXAMPLE_BATCH",
    "FORMATS",
    "PARTS",
    "DecoderGraph",
    "EncoderGraph",
    "ExportError",
    "ExportFormat",
    "Part",
    "SamplerGraph",
    "build_graphs",
    "check_export",
    "export_model",
    "load_exported",
]
