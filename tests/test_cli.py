"""The `lightning-vae` LightningCLI: every config runs, overrides apply, checkpoints reload alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import MNIST_DIR, ROOT

from lightning_vae import VAE
from lightning_vae.cli import build_cli


def _lightning_cli_configs() -> list[Path]:
    """Every YAML under configs/ written for LightningCLI (top-level `model` and `trainer`, no Hydra `defaults`)."""
    found = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        content = yaml.safe_load(path.read_text())
        if isinstance(content, dict) and "model" in content and "trainer" in content and "defaults" not in content:
            found.append(path)
    return found


def _data_overrides(config: Path) -> list[str]:
    text = config.read_text()
    if "MNISTDataModule" in text:
        if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
            pytest.skip(f"real MNIST not found in {MNIST_DIR}")
        return [f"--data.init_args.data_dir={MNIST_DIR}", "--data.init_args.train_subset=512"]
    if "ShapesDataModule" in text:
        return ["--data.init_args.n_train=256", "--data.init_args.n_val=128"]
    return []


def test_the_main_configs_exist() -> None:
    names = {p.name for p in _lightning_cli_configs()}
    assert {"shapes.yaml", "mnist_mlp.yaml"} <= names


@pytest.mark.parametrize("config", _lightning_cli_configs(), ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_fit_fast_dev_run_for_every_config(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cli = build_cli(
        args=[
            "fit",
            f"--config={config}",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            *_data_overrides(config),
        ]
    )
    assert cli.trainer.global_step >= 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def test_overrides_fit_checkpoint_and_the_other_subcommands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    common = [
        "--config=configs/shapes.yaml",
        "--data.init_args.n_train=256",
        "--data.init_args.n_val=64",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = build_cli(args=["fit", *common, "--model.beta=2.5", "--trainer.max_steps=3", "--trainer.limit_val_batches=1"])
    assert cli.model.beta == 2.5 and cli.trainer.global_step == 3
    ckpt = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert ckpt.exists()

    loaded = VAE.load_from_checkpoint(ckpt)  # networks rebuilt from the checkpoint alone
    x = torch.rand(4, 1, 32, 32).round()
    cli.model.eval(), loaded.eval()
    torch.testing.assert_close(loaded.encode(x).mean, cli.model.encode(x).mean, rtol=0, atol=0)
    assert loaded.beta == 2.5

    for subcommand in ("validate", "test"):
        other = build_cli(
            args=[
                subcommand,
                *common,
                f"--ckpt_path={ckpt}",
                "--trainer.limit_val_batches=1",
                "--trainer.limit_test_batches=1",
            ]
        )
        stage = "val" if subcommand == "validate" else "test"
        assert f"{stage}/elbo" in other.trainer.callback_metrics
    predicted = build_cli(args=["predict", *common, f"--ckpt_path={ckpt}", "--trainer.limit_predict_batches=1"])
    assert predicted.trainer.predict_loop.predictions[0].shape == (64, 10)


def test_user_networks_trained_through_the_cli_reload_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cli = build_cli(
        args=[
            "fit",
            "--model.encoder=helpers.PlainEncoder",
            "--model.encoder.init_args.in_features=1024",
            "--model.decoder=helpers.PlainDecoder",
            "--model.decoder.init_args.shape=[1, 32, 32]",
            "--data.init_args.n_train=128",
            "--data.init_args.n_val=64",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    loaded = VAE.load_from_checkpoint(cli.trainer.checkpoint_callback.best_model_path)
    assert type(loaded.encoder).__name__ == "PlainEncoder"
    x = torch.rand(3, 1, 32, 32).round()
    cli.model.eval(), loaded.eval()
    torch.testing.assert_close(loaded.encode(x).mean, cli.model.encode(x).mean, rtol=0, atol=0)


def test_console_script_prints_a_summary(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("lightning-vae")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "lightning_vae.cli"]
    result = subprocess.run(
        [
            *command,
            "fit",
            "--config=configs/shapes.yaml",
            "--data.init_args.n_train=128",
            "--data.init_args.n_val=64",
            "--trainer.max_steps=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ELBO" in result.stdout and "KL" in result.stdout
    assert "tensorboard --logdir" in result.stdout and "checkpoint:" in result.stdout


def test_bad_cli_values_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit):
        build_cli(
            args=["fit", "--config=configs/shapes.yaml", "--model.likelihood=poisson", "--trainer.fast_dev_run=true"]
        )
    with pytest.raises(ValueError, match="`beta` to be > 0"):
        build_cli(
            args=[
                "fit",
                "--config=configs/shapes.yaml",
                "--model.beta=-1",
                "--trainer.fast_dev_run=true",
                "--data.init_args.n_train=64",
                "--data.init_args.n_val=64",
            ]
        )
