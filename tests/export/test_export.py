"""Export: ONNX files run in onnxruntime, TorchScript and torch.export files reloaded, all against the PyTorch model."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import PlainDecoder, PlainEncoder, trainer_kwargs
from support.paths import ROOT
from torch import nn
from torch.distributions import Independent, Laplace, Normal

from lightning_vae import VAE
from lightning_vae.cli.generate import main
from lightning_vae.data import ShapesDataModule
from lightning_vae.distributions import Prior
from lightning_vae.export import ExportError, check_export, export_model, load_exported
from lightning_vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, PixelCNNDecoder

ort = pytest.importorskip("onnxruntime")

SHAPE, LATENT = (1, 28, 28), 4
BATCHES = (1, 5)  # the graphs are traced at batch 2: both sizes differ from it


def mlp_vae(**kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder(SHAPE, LATENT, hidden_sizes=(32,)), MLPDecoder(LATENT, SHAPE, hidden_sizes=(32,)), **kwargs)


def conv_vae(**kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(ConvEncoder(1, 28, latent_dim=LATENT), ConvDecoder(LATENT, 1, 28), **kwargs)


def onnx_run(path: Path, **inputs: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(inputs)
    assert all(i.shape[0] == "batch" for i in session.get_inputs())  # a named, dynamic batch dimension
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})


def reference_latent(vae: VAE, noise: torch.Tensor, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """z for standard normal noise, from the prior's parameters (NumPy inverse CDF for the mixture)."""
    prior = vae.prior
    if hasattr(prior, "logits"):  # mixture of Gaussians
        weights = torch.softmax(prior.logits.detach().double(), 0).numpy()
        k = np.searchsorted(np.cumsum(weights), uniform.double().numpy(), side="right")
        k = torch.from_numpy(np.minimum(k, len(weights) - 1))
        return prior.locs.detach()[k] + torch.exp(0.5 * prior.log_vars.detach()[k]) * noise
    if hasattr(prior, "log_var"):  # learnable Gaussian
        return prior.loc.detach() + torch.exp(0.5 * prior.log_var.detach()) * noise
    return noise


def expected_outputs(vae: VAE, n: int, seed: int) -> tuple[dict, dict]:
    """Inputs of the three graphs at batch ``n`` and what the PyTorch model gives for them."""
    g = torch.Generator().manual_seed(seed)
    x, z, noise, uniform = (
        torch.rand(n, *SHAPE, generator=g),
        torch.randn(n, LATENT, generator=g),
        torch.randn(n, LATENT, generator=g),
        torch.rand(n, generator=g),
    )
    with torch.no_grad():
        q = vae.encode(x)
        mixture = hasattr(vae.prior, "logits")
        sampler_in = {"noise": noise, "uniform": uniform} if mixture else {"noise": noise}
        expected = {
            "encoder": [q.mean, q.log_var],
            "decoder": [vae.likelihood.mean(vae.decode(z))],
            "sampler": [vae.likelihood.mean(vae.decode(reference_latent(vae, noise, uniform if mixture else None)))],
        }
    return {"encoder": {"x": x}, "decoder": {"z": z}, "sampler": sampler_in}, expected


@pytest.mark.parametrize(
    "make", [mlp_vae, lambda: conv_vae(prior="learnable"), lambda: mlp_vae(prior="mixture", prior_components=3)]
)
def test_onnx_files_match_pytorch_at_two_batch_sizes(make, tmp_path: Path) -> None:
    vae = make().eval()
    written = export_model(vae, tmp_path, "onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "decoder.onnx",
        "encoder.onnx",
        "manifest.json",
        "sampler.onnx",
    ]
    for n in BATCHES:
        inputs, expected = expected_outputs(vae, n, seed=n)
        for part in ("encoder", "decoder", "sampler"):
            got = onnx_run(written[part], **inputs[part])
            assert len(got) == len(expected[part])
            for g, e in zip(got, expected[part]):
                assert g.shape == tuple(e.shape)
                np.testing.assert_allclose(g, e.numpy(), rtol=0, atol=1e-5, err_msg=f"{part} at batch {n}")


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
def test_torchscript_and_torch_export_files_reload_and_match(fmt: str, tmp_path: Path) -> None:
    vae = mlp_vae(prior="mixture", prior_components=3).eval()
    written = export_model(vae, tmp_path, fmt)
    assert written["encoder"].suffix == {"torchscript": ".pt", "torch_export": ".pt2"}[fmt]
    for n in BATCHES:
        inputs, expected = expected_outputs(vae, n, seed=10 + n)
        for part in ("encoder", "decoder", "sampler"):
            got = load_exported(written[part])(*inputs[part].values())
            got = got if isinstance(got, tuple) else (got,)
            for g, e in zip(got, expected[part]):
                torch.testing.assert_close(g, e, rtol=0, atol=1e-6)


def test_the_model_is_left_as_it_was(tmp_path: Path) -> None:
    vae = mlp_vae(prior="learnable").double().train()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    written = export_model(vae, tmp_path, "torchscript")
    assert vae.training and vae.encoder.training and next(vae.parameters()).dtype == torch.float64
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    x = torch.rand(3, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        expected = vae.eval().encode(x).mean.float()
    torch.testing.assert_close(load_exported(written["encoder"])(x.float())[0], expected, rtol=1e-5, atol=1e-5)


def test_manifest_says_how_to_feed_each_graph(tmp_path: Path) -> None:
    export_model(mlp_vae(), tmp_path, "onnx", parts=["encoder", "sampler"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["data_shape"] == list(SHAPE) and manifest["latent_dim"] == LATENT
    assert set(manifest["parts"]) == {"encoder", "sampler"} and not (tmp_path / "decoder.onnx").exists()
    assert manifest["parts"]["encoder"]["outputs"] == {"loc": ["batch", LATENT], "log_var": ["batch", LATENT]}
    assert manifest["parts"]["sampler"]["inputs"] == {"noise": ["batch", LATENT]}
    assert manifest["parts"]["sampler"]["note"] == "noise ~ N(0, I)"


@pytest.mark.parametrize("posterior", ["iaf", "planar", "full_covariance"])
def test_a_flow_models_encoder_exports_its_base_gaussian_and_says_so(posterior: str, tmp_path: Path) -> None:
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
    export_model(mlp_vae(), tmp_path, "onnx", parts=["encoder"])
    assert "note" not in json.loads((tmp_path / "manifest.json").read_text())["parts"]["encoder"]


def test_an_encoder_returning_a_distribution_exports_its_mean_and_log_variance(tmp_path: Path) -> None:
    class DistributionEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(64, 2 * LATENT)

        def forward(self, x: torch.Tensor) -> Independent:
            loc, raw = self.net(x.flatten(1)).chunk(2, -1)
            return Independent(Normal(loc, nn.functional.softplus(raw) + 1e-3), 1)

    vae = VAE(DistributionEncoder(), PlainDecoder(LATENT), data_shape=(1, 8, 8)).eval()
    written = export_model(vae, tmp_path, "onnx", parts=["encoder"])
    x = torch.rand(3, 1, 8, 8)
    loc, log_var = onnx_run(written["encoder"], x=x)
    with torch.no_grad():
        q = vae.encode(x)
    np.testing.assert_allclose(loc, q.mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(log_var, q.variance.log().numpy(), atol=1e-5)


def test_what_cannot_be_exported_says_so(tmp_path: Path) -> None:
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
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
        with pytest.raises(ExportError, match="ONNX export needs the `onnx` package: pip install onnx"):
            export_model(mlp_vae(), tmp_path / "e", "onnx")
    with pytest.raises(ValueError, match="`format` to be one of"):
        export_model(mlp_vae(), tmp_path, "tflite")
    with pytest.raises(ValueError, match=r"`parts` to be a non-empty sequence of names from \('encoder'"):
        export_model(mlp_vae(), tmp_path, "onnx", parts=["prior"])
    with pytest.raises(ValueError, match=r"`parts` to be a non-empty sequence of names from .*got \[\]"):
        export_model(mlp_vae(), tmp_path, "onnx", parts=[])
    with pytest.raises(TypeError, match=r"`parts` to be a sequence of names from .*got 'encoder'"):
        export_model(mlp_vae(), tmp_path, "onnx", parts="encoder")
    with pytest.raises(TypeError, match=r"`format` to be one of \('onnx', 'torchscript', 'torch_export'\), got None"):
        export_model(mlp_vae(), tmp_path, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`output_dir` to be a folder path, got 3 \(int\)"):
        export_model(mlp_vae(), 3, "onnx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`opset` to be an int >= 7, got 0"):
        export_model(mlp_vae(), tmp_path, "onnx", opset=0)
    with pytest.raises(ValueError, match=r"`data_shape` to be a non-empty sequence of sizes >= 1, got \(1, 0\)"):
        export_model(mlp_vae(), tmp_path, "onnx", data_shape=(1, 0))


def test_a_branch_on_tensor_values_is_warned_and_caught_by_the_check(tmp_path: Path) -> None:
    class BranchingEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(64, 2 * LATENT)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.net(x.flatten(1))
            if h.sum() > 0:  # traced as the branch of the example input only
                h = 2 * h
            loc, log_var = h.chunk(2, -1)
            return loc, log_var

    torch.manual_seed(0)
    vae = VAE(BranchingEncoder(), PlainDecoder(LATENT), data_shape=(1, 8, 8)).eval()
    with torch.no_grad():
        vae.encoder.net.bias.fill_(5.0)  # the example takes the doubling branch ...
    with pytest.warns(UserWarning, match=r"Exporting the encoder \(BranchingEncoder\) as torchscript: .*branch"):
        written = export_model(vae, tmp_path, "torchscript", parts=["encoder"])
    with torch.no_grad():
        vae.encoder.net.bias.fill_(-5.0)  # ... and the same weights later the other one
    assert check_export(vae, written)["encoder"] > 1.0


# ---------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    trainer = Trainer(**trainer_kwargs(root, max_steps=2, limit_val_batches=1))
    trainer.fit(mlp_vae(prior="learnable"), ShapesDataModule(image_size=28, n_train=32, n_val=16, batch_size=16))
    trainer.save_checkpoint(root / "model.ckpt")
    return root / "model.ckpt"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export"])
def test_the_export_command(fmt: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exported"
    assert main(["export", f"--ckpt_path={checkpoint}", f"--format={fmt}", f"--output={out}"]) == out
    printed = capsys.readouterr().out
    assert (
        "lightning-vae export: wrote encoder" in printed and "checked against PyTorch at batch sizes 1 and 3" in printed
    )
    vae = VAE.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    run = load_exported(next(out.glob("decoder.*")))
    z = torch.randn(7, LATENT)
    with torch.no_grad():
        expected = vae.likelihood.mean(vae.decode(z))
    torch.testing.assert_close(torch.as_tensor(run(z)), expected, rtol=0, atol=1e-5)


def test_the_export_command_reports_errors_without_usage_text(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    trainer = Trainer(**trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0))
    trainer.fit(
        VAE(ConvEncoder(1, 28, latent_dim=LATENT), PixelCNNDecoder(LATENT, SHAPE, n_layers=2)),
        ShapesDataModule(image_size=28, n_train=16, n_val=16, batch_size=16),
    )
    trainer.save_checkpoint(tmp_path / "pixelcnn.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", f"--ckpt_path={tmp_path / 'pixelcnn.ckpt'}", f"--output={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("lightning-vae export: error: The decoder PixelCNNDecoder")
    assert "usage:" not in err
    with pytest.raises(SystemExit):
        main(["export", f"--ckpt_path={checkpoint}", "--format=tflite"])  # an argument error keeps argparse's text
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_the_readme_export_block_runs(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Export for deployment")
    section = readme[start : readme.index("\n## ", start + 1)]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block.replace("path/to/checkpoint.ckpt", str(checkpoint)), namespace)  # noqa: S102 - the README's code
    assert namespace["images"].shape == (16, *SHAPE)
    vae = namespace["vae"].eval()
    with torch.no_grad():
        expected = vae.likelihood.mean(vae.decode(reference_latent(vae, torch.from_numpy(namespace["noise"]))))
    np.testing.assert_allclose(namespace["images"], expected.numpy(), atol=1e-5)


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
