"""export_model (export/write.py): ONNX files run in onnxruntime, TorchScript and torch.export files reloaded, all
against the PyTorch model; the manifest; the model left as it was; the writer's own argument checks; tracer
warnings passed on; the README's export block."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.export import BATCHES, LATENT, SHAPE, conv_vae, expected_outputs, mlp_vae, onnx_run, reference_latent
from support.export import train_checkpoint as train_export_checkpoint
from support.modules import PlainDecoder
from support.paths import ROOT
from torch import nn

from lightning_vae import VAE
from lightning_vae.export import ExportError, check_export, export_model, load_exported

pytest.importorskip("onnxruntime")


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


def test_the_manifest_records_the_files_the_format_and_the_opset(tmp_path: Path) -> None:
    written = export_model(mlp_vae(), tmp_path / "onnx", "onnx", opset=13)
    manifest = json.loads(written["manifest"].read_text())
    assert {part: manifest["parts"][part]["file"] for part in ("encoder", "decoder", "sampler")} == {
        "encoder": "encoder.onnx",
        "decoder": "decoder.onnx",
        "sampler": "sampler.onnx",
    }
    assert manifest["format"] == "onnx" and manifest["opset"] == 13 and manifest["torch"] == torch.__version__
    import onnx

    assert onnx.load(str(written["encoder"])).opset_import[0].version == 13  # the opset asked for, in the file
    written = export_model(mlp_vae(), tmp_path / "ts", "torchscript", parts=["decoder"])
    manifest = json.loads(written["manifest"].read_text())
    assert manifest["format"] == "torchscript" and "opset" not in manifest
    assert set(written) == {"decoder", "manifest"} and written["decoder"].name == "decoder.pt"


def test_what_the_writer_refuses_says_so(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
        with pytest.raises(ExportError, match="ONNX export needs the `onnx` package: pip install onnx"):
            export_model(mlp_vae(), tmp_path / "e", "onnx")
    with pytest.raises(ValueError, match="`format` to be one of"):
        export_model(mlp_vae(), tmp_path, "tflite")
    with pytest.raises(TypeError, match=r"`format` to be one of \('onnx', 'torchscript', 'torch_export'\), got None"):
        export_model(mlp_vae(), tmp_path, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`output_dir` to be a folder path, got 3 \(int\)"):
        export_model(mlp_vae(), 3, "onnx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`opset` to be an int >= 7, got 0"):
        export_model(mlp_vae(), tmp_path, "onnx", opset=0)
    assert not (tmp_path / "e").exists()


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


def test_shape_checks_in_a_network_are_not_warned_about(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    # MLPEncoder checks `x.shape[1:]` in forward: a tracer warning that holds for every input of the data shape.
    export_model(mlp_vae(), tmp_path, "torchscript", parts=["encoder"])
    assert not [w for w in recwarn if "Exporting the encoder" in str(w.message)]


def test_an_exporter_failure_names_the_part_and_the_network(tmp_path: Path) -> None:
    vae = VAE(_LinearEncoder(), _Undecodable(), data_shape=(1, 8, 8)).eval()
    with pytest.raises(ExportError, match=r"Cannot export the decoder \(_Undecodable\) as torch_export: \w+"):
        export_model(vae, tmp_path, "torch_export", parts=["decoder"])
    assert not (tmp_path / "manifest.json").exists()  # no manifest for files that were not written


class _LinearEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(64, 2 * LATENT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_var = self.net(x.flatten(1)).chunk(2, -1)
        return loc, log_var


class _Undecodable(nn.Module):
    """A decoder that leaves the graph through Python numbers: torch.export cannot follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(LATENT, 64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.net(z).tolist()).view(-1, 1, 8, 8)


# ---------------------------------------------------------------------------------------- the README's block
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_export_checkpoint(tmp_path_factory.mktemp("trained"))


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
