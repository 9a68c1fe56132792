"""After training: `lightning-vae sample`, `lightning-vae reconstruct` and `lightning-vae export` (generate.py) from a
checkpoint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support.checkpoints import DATA, loaded, train_checkpoint, val_images
from support.export import LATENT, SHAPE
from support.export import train_checkpoint as train_export_checkpoint
from support.images import decode_png, quantize, reference_grid

from lightning_vae import VAE
from lightning_vae.cli import generate, main
from lightning_vae.data import ShapesDataModule
from lightning_vae.export import load_exported
from lightning_vae.nets import ConvEncoder, PixelCNNDecoder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_checkpoint(tmp_path_factory.mktemp("trained"))


def test_sample_writes_the_prior_samples_of_the_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid" / "samples.png"
    main(["sample", f"--ckpt_path={checkpoint}", "--n=12", "--nrow=4", "--seed=5", f"--output={out}"])
    model = loaded(checkpoint)
    torch.manual_seed(5)  # the same latent noise, drawn with the global generator
    expected = model.sample(12)
    reference = quantize(torch.from_numpy(reference_grid(expected.numpy(), 4, 2, 1.0)))
    got = decode_png(out.read_bytes())
    assert got.shape == reference.shape == (2 + 3 * 30, 2 + 4 * 30, 1)
    assert np.abs(got.astype(int) - reference.astype(int)).max() <= 1


def test_reconstruct_uses_the_data_the_checkpoint_was_trained_on(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "recon.png"
    main(["reconstruct", f"--ckpt_path={checkpoint}", "--n=6", "--nrow=3", f"--output={out}"])
    x = val_images(6)
    with torch.no_grad():
        recon = loaded(checkpoint).reconstruct(x)
    expected = torch.cat([x[:3], recon[:3], x[3:], recon[3:]])
    reference = quantize(torch.from_numpy(reference_grid(expected.numpy(), 3, 2, 1.0)))
    assert np.abs(decode_png(out.read_bytes()).astype(int) - reference.astype(int)).max() <= 1


def test_reconstruct_from_a_hydra_run_and_from_an_explicit_config(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state.pop("datamodule_hyper_parameters")  # as trained through Hydra: the data are in the run's .hydra/config.yaml
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    torch.save(state, run / "checkpoints" / "last.ckpt")
    (run / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"data": {"_target_": "lightning_vae.data.ShapesDataModule", **DATA}, "seed": 0})
    )
    main(["reconstruct", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "--n=4", f"--output={tmp_path / 'a.png'}"])

    config = tmp_path / "cli.yaml"  # a LightningCLI config; a --data_arg override on top
    config.write_text(
        yaml.safe_dump({"data": {"class_path": "lightning_vae.data.ShapesDataModule", "init_args": DATA}})
    )
    main(
        [
            "reconstruct",
            f"--ckpt_path={checkpoint}",
            f"--config={config}",
            "--data_arg=batch_size=3",
            "--n=4",
            f"--output={tmp_path / 'b.png'}",
        ]
    )
    np.testing.assert_array_equal(
        decode_png((tmp_path / "a.png").read_bytes()), decode_png((tmp_path / "b.png").read_bytes())
    )


@pytest.mark.parametrize("name", ["shapes", "configs/cli/shapes.yaml"])
def test_reconstruct_takes_a_shipped_config_by_name_from_any_folder(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # As typed after `lightning-vae fit --config shapes`, in a folder that is not a checkout: `--config` names the
    # shipped config as `fit` does (the checkpoint here is 28 px on 40 validation images, hence the two overrides).
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.png"
    main(
        ["reconstruct", "--ckpt_path", str(checkpoint), "--config", name, "--data_arg", "image_size=28",
         "--data_arg", "n_val=40", "--n", "4", "--nrow", "4", "--output", str(out)]
    )  # fmt: skip
    x = val_images(4)
    with torch.no_grad():
        expected = torch.cat([x, loaded(checkpoint).reconstruct(x)])
    reference = quantize(torch.from_numpy(reference_grid(expected.numpy(), 4, 2, 1.0)))
    assert np.abs(decode_png(out.read_bytes()).astype(int) - reference.astype(int)).max() <= 1


def test_generation_errors_are_usage_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", f"--ckpt_path={tmp_path / 'missing.ckpt'}"])
    assert exit_info.value.code == 2 and "Expected `ckpt_path` to be a checkpoint file" in capsys.readouterr().err
    bare = tmp_path / "bare.yaml"
    bare.write_text("trainer: {max_epochs: 1}\n")
    with pytest.raises(SystemExit):
        main(["reconstruct", f"--ckpt_path={checkpoint}", f"--config={bare}", f"--output={tmp_path / 'x.png'}"])
    assert "Expected a config with a `data` section" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reconstruct", f"--ckpt_path={checkpoint}", "--config=no_such_config"])
    assert "Expected `--config` to be a YAML file or the name of a shipped config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reconstruct", f"--ckpt_path={checkpoint}", "--data_arg=oops"])
    assert "Expected --data_arg as KEY=VALUE, got 'oops'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", f"--ckpt_path={checkpoint}", "--n=0"])
    assert "--n and --nrow must be positive" in capsys.readouterr().err


def test_the_console_script_samples(checkpoint: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("lightning-vae")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "lightning_vae.cli"]
    out = tmp_path / "s.png"
    result = subprocess.run(
        [*command, "sample", "--ckpt_path", str(checkpoint), "--n", "4", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote a 122x32 grid of 4 images to {out}" in result.stdout
    assert decode_png(out.read_bytes()).shape == (32, 122, 1)


# ---------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def export_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_export_checkpoint(tmp_path_factory.mktemp("trained_for_export"))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export"])
def test_the_export_command(fmt: str, export_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / "exported"
    assert generate.main(["export", f"--ckpt_path={export_checkpoint}", f"--format={fmt}", f"--output={out}"]) == out
    printed = capsys.readouterr().out
    assert (
        "lightning-vae export: wrote encoder" in printed and "checked against PyTorch at batch sizes 1 and 3" in printed
    )
    vae = VAE.load_from_checkpoint(export_checkpoint, map_location="cpu").eval()
    run = load_exported(next(out.glob("decoder.*")))
    z = torch.randn(7, LATENT)
    with torch.no_grad():
        expected = vae.likelihood.mean(vae.decode(z))
    torch.testing.assert_close(torch.as_tensor(run(z)), expected, rtol=0, atol=1e-5)


def test_the_export_command_reports_errors_without_usage_text(
    export_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lightning.pytorch import Trainer
    from support.modules import trainer_kwargs

    trainer = Trainer(**trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0))
    trainer.fit(
        VAE(ConvEncoder(1, 28, latent_dim=LATENT), PixelCNNDecoder(LATENT, SHAPE, n_layers=2)),
        ShapesDataModule(image_size=28, n_train=16, n_val=16, batch_size=16),
    )
    trainer.save_checkpoint(tmp_path / "pixelcnn.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["export", f"--ckpt_path={tmp_path / 'pixelcnn.ckpt'}", f"--output={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("lightning-vae export: error: The decoder PixelCNNDecoder")
    assert "usage:" not in err
    with pytest.raises(SystemExit):
        generate.main(["export", f"--ckpt_path={export_checkpoint}", "--format=tflite"])  # argparse's own text
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def conditional_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-conditional VAE (3 classes, 4x4 images) saved by a Trainer: it reloads from its own record."""
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_vae import VAE
    from lightning_vae.models import ConditionalVAEModel
    from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder

    root = tmp_path_factory.mktemp("conditional")
    model = ConditionalVAEModel(
        ConditionalMLPEncoder((1, 4, 4), 3, 2, (8,)), ConditionalMLPDecoder(2, 3, (1, 4, 4), (8,)), n_classes=3
    )
    loader = DataLoader(TensorDataset(torch.bernoulli(torch.rand(8, 1, 4, 4)), torch.randint(0, 3, (8,))), 4)
    trainer = Trainer(default_root_dir=root, max_steps=1, logger=False, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(VAE(model=model), loader)
    trainer.save_checkpoint(root / "cvae.ckpt")
    return root / "cvae.ckpt"


def test_sample_with_a_condition_draws_that_class(conditional_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "sevens.png"
    main(
        [
            "sample",
            f"--ckpt_path={conditional_checkpoint}",
            "--n=4",
            "--nrow=4",
            "--seed=1",
            "--condition=2",
            f"--output={out}",
        ]
    )
    model = loaded(conditional_checkpoint)
    torch.manual_seed(1)
    with torch.no_grad():
        z = torch.randn(4, 2)
        expected = torch.sigmoid(model.model.decoder(z, torch.eye(3)[[2] * 4])).view(4, 1, 4, 4)
    reference = quantize(torch.from_numpy(reference_grid(expected.numpy(), 4, 2, 1.0)))
    assert np.abs(decode_png(out.read_bytes()).astype(int) - reference.astype(int)).max() <= 1


def test_sample_all_classes_writes_one_row_per_class(conditional_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "classes.png"
    main(["sample", f"--ckpt_path={conditional_checkpoint}", "--n=6", "--condition", "all", f"--output={out}"])
    assert decode_png(out.read_bytes()).shape[:2] == (2 + 3 * 6, 2 + 2 * 6)  # 3 rows (classes) of 2 columns


def test_condition_errors_are_reported(
    conditional_checkpoint: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cases = [
        ([f"--ckpt_path={conditional_checkpoint}"], "the model is conditional: pass --condition"),
        ([f"--ckpt_path={conditional_checkpoint}", "--condition=3"], r"labels in \[0, 3\)"),
        ([f"--ckpt_path={conditional_checkpoint}", "--condition", "0", "1"], "one per sample"),
        ([f"--ckpt_path={conditional_checkpoint}", "--condition=seven"], "class labels"),
        ([f"--ckpt_path={checkpoint}", "--condition=1"], "not conditional"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit):
            main(["sample", *args, "--n=4", f"--output={tmp_path / 'x.png'}"])
        assert re.search(message, capsys.readouterr().err), message
