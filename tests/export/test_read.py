"""Reading exported files back and checking them (export/read.py): each kind of file loads as a callable that gives
what the PyTorch graph gives, check_export reports the largest difference and names a graph of the wrong shape."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from support.export import LATENT, SHAPE, mlp_vae
from torch import nn

from lightning_vae.export import ExportError, build_graphs, check_export, export_model, load_exported


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export"])
def test_each_kind_of_file_loads_as_a_callable_of_tensors(fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    vae = mlp_vae().eval()
    written = export_model(vae, tmp_path, fmt)
    graphs, _, _ = build_graphs(vae)
    x, z = torch.rand(4, *SHAPE), torch.randn(4, LATENT)
    encoder, decoder = load_exported(written["encoder"]), load_exported(written["decoder"])
    loc, log_var = encoder(x)  # two outputs: a tuple
    decoded = decoder(z)  # one output: a tensor, not a tuple of one
    assert isinstance(decoded, torch.Tensor) and decoded.shape == (4, *SHAPE)
    with torch.no_grad():
        expected_loc, expected_log_var = graphs["encoder"](x)
        torch.testing.assert_close(loc, expected_loc, rtol=0, atol=1e-5)
        torch.testing.assert_close(log_var, expected_log_var, rtol=0, atol=1e-5)
        torch.testing.assert_close(decoded, graphs["decoder"](z), rtol=0, atol=1e-5)


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"Expected an exported file ending in \.onnx, \.pt or \.pt2, got '.*tflite'"):
        load_exported(path)


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
def test_check_export_reports_rounding_for_faithful_files(fmt: str, tmp_path: Path) -> None:
    vae = mlp_vae(prior="mixture", prior_components=3).eval()
    written = export_model(vae, tmp_path, fmt)
    written.pop("manifest")
    errors = check_export(vae, written, batch_sizes=(1, 2, 7))
    assert set(errors) == {"encoder", "decoder", "sampler"}
    assert all(0.0 <= e < 1e-5 for e in errors.values()), errors


def test_check_export_measures_the_difference_and_names_a_wrong_shape(tmp_path: Path) -> None:
    vae = mlp_vae().eval()
    written = export_model(vae, tmp_path, "torchscript", parts=["decoder"])
    with torch.no_grad():
        vae.decoder.head.bias.add_(0.25)  # the model moved on since the export: every logit by 0.25
    z = torch.randn(64, LATENT)
    with torch.no_grad():
        before = torch.sigmoid(vae.decode(z) - 0.25)
        after = torch.sigmoid(vae.decode(z))
    largest = float((after - before).abs().max())
    error = check_export(vae, {"decoder": written["decoder"]}, batch_sizes=(64,))["decoder"]
    # sigmoid moves by at most 0.25 / 4 for a shift of 0.25; on other draws of z about as much as here
    assert 0.5 * largest < error <= 0.25 / 4 + 1e-6

    class Wrong(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z.sum(-1, keepdim=True)

    wrong = tmp_path / "wrong.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's notes
        torch.jit.save(torch.jit.trace(Wrong(), torch.zeros(2, LATENT)), str(wrong))
    message = r"The exported decoder gives shape \(1, 1\) at batch 1, not \(1, 1, 28, 28\)"
    with pytest.raises(ExportError, match=message):
        check_export(vae, {"decoder": wrong})
