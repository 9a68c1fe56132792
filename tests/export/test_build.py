"""build_graphs (export/build.py): which graphs, their example inputs and the manifest's record of them; what a
richer posterior leaves out of the encoder graph; what cannot be exported, refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.export import LATENT, SHAPE, mlp_vae, onnx_run
from support.modules import PlainDecoder, PlainEncoder
from torch import nn
from torch.distributions import Independent, Laplace

from lightning_vae import VAE
from lightning_vae.distributions import Prior
from lightning_vae.export import EXAMPLE_BATCH, PARTS, ExportError, build_graphs, export_model, load_exported
from lightning_vae.nets import ConvEncoder, MLPDecoder, MLPEncoder, PixelCNNDecoder


def test_the_graphs_their_examples_and_the_manifest() -> None:
    vae = mlp_vae(prior="mixture", prior_components=3)
    graphs, examples, manifest = build_graphs(vae)
    assert list(graphs) == list(PARTS) == ["encoder", "decoder", "sampler"]
    assert [tuple(t.shape) for t in examples["encoder"]] == [(EXAMPLE_BATCH, *SHAPE)]
    assert [tuple(t.shape) for t in examples["decoder"]] == [(EXAMPLE_BATCH, LATENT)]
    assert [tuple(t.shape) for t in examples["sampler"]] == [(EXAMPLE_BATCH, LATENT), (EXAMPLE_BATCH,)]
    u = examples["sampler"][1]
    assert bool(((u >= 0) & (u < 1)).all())  # the mixture's uniform input
    assert manifest == {
        "data_shape": list(SHAPE),
        "latent_dim": LATENT,
        "parts": {
            "encoder": {
                "inputs": {"x": ["batch", *SHAPE]},
                "outputs": {"loc": ["batch", LATENT], "log_var": ["batch", LATENT]},
            },
            "decoder": {"inputs": {"z": ["batch", LATENT]}, "outputs": {"mean": ["batch", *SHAPE]}},
            "sampler": {
                "inputs": {"noise": ["batch", LATENT], "uniform": ["batch"]},
                "outputs": {"sample": ["batch", *SHAPE]},
                "note": "noise ~ N(0, I); uniform ~ U[0, 1) picks the mixture component",
            },
        },
    }
    # every graph runs on its example and gives the shapes the manifest records
    with torch.no_grad():
        for part, graph in graphs.items():
            out = graph(*examples[part])
            out = out if isinstance(out, tuple) else (out,)
            recorded = manifest["parts"][part]["outputs"].values()
            assert [tuple(o.shape) for o in out] == [(EXAMPLE_BATCH, *s[1:]) for s in recorded]


def test_the_graphs_are_float32_eval_copies_and_the_examples_do_not_depend_on_the_global_seed() -> None:
    vae = mlp_vae().double().train()
    torch.manual_seed(1)
    graphs, first, _ = build_graphs(vae, ["encoder", "decoder"])
    torch.manual_seed(2)
    _, second, _ = build_graphs(vae, ["encoder", "decoder"])
    for part in ("encoder", "decoder"):
        torch.testing.assert_close(first[part], second[part], rtol=0, atol=0)
    for graph in graphs.values():
        assert not graph.training and all(p.dtype == torch.float32 for p in graph.parameters())
        assert all(p.data_ptr() not in {q.data_ptr() for q in vae.parameters()} for p in graph.parameters())
    assert vae.training and next(vae.parameters()).dtype == torch.float64


def test_the_data_shape_comes_from_the_model_its_encoder_or_the_argument() -> None:
    encoder_only = VAE(MLPEncoder((1, 6, 6), latent_dim=3), MLPDecoder(3, (1, 6, 6)))
    assert build_graphs(encoder_only, ["encoder"])[2]["data_shape"] == [1, 6, 6]  # the encoder's input_shape
    plain = VAE(PlainEncoder(64, LATENT), PlainDecoder(LATENT))
    _, examples, manifest = build_graphs(plain, ["encoder", "sampler"], data_shape=(1, 8, 8))
    assert manifest["data_shape"] == [1, 8, 8] and tuple(examples["encoder"][0].shape) == (EXAMPLE_BATCH, 1, 8, 8)
    assert manifest["latent_dim"] == LATENT  # the latent size the model learns from the example


def test_an_encoder_that_does_not_take_the_shape_is_named() -> None:
    vae = VAE(PlainEncoder(64, LATENT), PlainDecoder(LATENT))
    with pytest.raises(ValueError, match=r"The encoder does not take examples of shape \(1, 5, 5\): "):
        build_graphs(vae, ["encoder"], data_shape=(1, 5, 5))


@pytest.mark.parametrize("posterior", ["iaf", "planar", "full_covariance"])
def test_a_flow_models_encoder_exports_its_base_gaussian_and_says_so(posterior: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lightning_vae.models import FlowVAEModel

    model = FlowVAEModel(MLPEncoder(SHAPE, latent_dim=LATENT), MLPDecoder(LATENT, SHAPE), posterior=posterior)
    vae = VAE(model=model).eval()
    with pytest.warns(UserWarning, match="base Gaussian .* q\\(z\\|x\\) itself is not in this graph"):
        written = export_model(vae, tmp_path, "onnx", parts=["encoder"])
    note = json.loads((tmp_path / "manifest.json").read_text())["parts"]["encoder"]["note"]
    assert repr(posterior) in note and "without" in note
    x = torch.rand(3, *SHAPE)
    loc, _ = onnx_run(written["encoder"], x=x)
    with torch.no_grad():
        base_loc, _ = model.encoder(x)  # the encoder's own Gaussian, before the flows
    np.testing.assert_allclose(loc, base_loc.numpy(), atol=1e-5)


def test_a_plain_models_encoder_export_has_no_such_note(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    export_model(mlp_vae(), tmp_path, "onnx", parts=["encoder"])
    assert "note" not in json.loads((tmp_path / "manifest.json").read_text())["parts"]["encoder"]


def test_what_cannot_be_exported_says_so(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pixelcnn = VAE(ConvEncoder(1, 28, latent_dim=LATENT), PixelCNNDecoder(LATENT, SHAPE))
    with pytest.raises(ExportError, match=r"PixelCNNDecoder is autoregressive: .* Only its encoder exports"):
        export_model(pixelcnn, tmp_path / "a", "onnx")
    assert not (tmp_path / "a").exists()  # nothing half-written
    assert set(export_model(pixelcnn, tmp_path / "b", "onnx", parts=["encoder"])) == {"encoder", "manifest"}

    class LaplacePrior(Prior):
        latent_dim = LATENT

        def forward(self, encoder: nn.Module | None = None) -> Independent:
            return Independent(Laplace(torch.zeros(LATENT), torch.ones(LATENT)), 1)

    with pytest.raises(ExportError, match="Cannot export a sampler for the prior Independent"):
        export_model(mlp_vae(prior=LaplacePrior()), tmp_path / "c", "onnx")
    with pytest.raises(ValueError, match="pass data_shape .*--data_shape 1 28 28"):
        export_model(VAE(PlainEncoder(64, LATENT), PlainDecoder(LATENT)), tmp_path / "d", "onnx")
    assert "encoder" in export_model(
        VAE(PlainEncoder(64, LATENT), PlainDecoder(LATENT)), tmp_path / "d", "onnx", data_shape=(1, 8, 8)
    )
    with pytest.raises(ValueError, match=r"`parts` to be a non-empty sequence of names from \('encoder'"):
        export_model(mlp_vae(), tmp_path, "onnx", parts=["prior"])
    with pytest.raises(ValueError, match=r"`parts` to be a non-empty sequence of names from .*got \[\]"):
        export_model(mlp_vae(), tmp_path, "onnx", parts=[])
    with pytest.raises(TypeError, match=r"`parts` to be a sequence of names from .*got 'encoder'"):
        export_model(mlp_vae(), tmp_path, "onnx", parts="encoder")
    with pytest.raises(ValueError, match=r"`data_shape` to be a non-empty sequence of sizes >= 1, got \(1, 0\)"):
        export_model(mlp_vae(), tmp_path, "onnx", data_shape=(1, 0))


def test_a_model_without_the_networks_or_a_prior_is_refused() -> None:
    class EncoderOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = MLPEncoder((1, 4, 4), latent_dim=2)

    with pytest.raises(TypeError, match=r"a model with an `decoder` module \(as VAE has\), got EncoderOnly"):
        build_graphs(EncoderOnly())

    class NoPrior(EncoderOnly):
        def __init__(self) -> None:
            super().__init__()
            self.decoder, self.likelihood = MLPDecoder(2, (1, 4, 4)), mlp_vae().likelihood

    assert set(build_graphs(NoPrior(), ["encoder", "decoder"])[0]) == {"encoder", "decoder"}
    with pytest.raises(ExportError, match=r"NoPrior has no `prior_distribution\(\)`; export --parts encoder decoder"):
        build_graphs(NoPrior())


@pytest.mark.parametrize("kind", ["labels", "embedded", "features"])
def test_a_conditional_model_exports_with_the_context_as_an_input(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lightning_vae.models import ConditionalVAEModel
    from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder

    size = {"labels": 3, "embedded": 4, "features": 5}[kind]
    n_classes = None if kind == "features" else 3
    model = ConditionalVAEModel(
        ConditionalMLPEncoder((1, 4, 4), size, 2, (8,)),
        ConditionalMLPDecoder(2, size, (1, 4, 4), (8,)),
        n_classes=n_classes,
        embedding_dim=4 if kind == "embedded" else None,
    )
    vae = VAE(model=model).eval()
    written = export_model(vae, tmp_path, "onnx")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["context"]["size"] == (3 if n_classes else 5)
    assert all("context" in manifest["parts"][part]["inputs"] for part in ("encoder", "decoder", "sampler"))
    x, z, noise = torch.rand(3, 1, 4, 4), torch.randn(3, 2), torch.randn(3, 2)
    context = torch.tensor([2, 0, 1]) if n_classes else torch.randn(3, 5)
    rows = torch.eye(3)[context] if n_classes else context  # what the graphs take: one-hot rows, or the features
    with torch.no_grad():
        q = vae.encode(x, context)
        loc, log_var = load_exported(written["encoder"])(x, rows)
        torch.testing.assert_close(torch.as_tensor(loc), q.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.as_tensor(log_var), q.variance.log(), atol=1e-5, rtol=1e-5)
        mean = model.likelihood.mean(model.generative({"z": z.unsqueeze(0)}, context=context).params[0])
        torch.testing.assert_close(
            torch.as_tensor(load_exported(written["decoder"])(z, rows)), mean, atol=1e-5, rtol=1e-5
        )
        sample = torch.as_tensor(load_exported(written["sampler"])(noise, rows))  # standard normal prior: z = noise
        torch.testing.assert_close(
            sample,
            model.likelihood.mean(model.generative({"z": noise.unsqueeze(0)}, context=context).params[0]),
            atol=1e-5,
            rtol=1e-5,
        )
