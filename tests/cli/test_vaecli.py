"""VAECLI and build_cli (cli/vaecli.py): every shipped config runs, overrides apply, checkpoints reload alone, user
networks work, what is missing is named, checkpoints follow the run's folder, the data must fit the model, and a run
shorter than an epoch validates and says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from support.cli import print_config, train_checkpoint_28
from support.modules import tiny_vae, trainer_kwargs
from support.paths import ROOT, require_mnist
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.cli import CLIError, build_cli, main
from lightning_vae.cli.args import prepare_args


def _lightning_cli_configs() -> list[Path]:
    """Every YAML under configs/cli/ written for LightningCLI (top-level `model` and `trainer`, no Hydra `defaults`)."""
    found = []
    for path in sorted((ROOT / "configs" / "cli").rglob("*.yaml")):
        content = yaml.safe_load(path.read_text())
        if isinstance(content, dict) and "model" in content and "trainer" in content and "defaults" not in content:
            found.append(path)
    return found


def _data_overrides(config: Path) -> list[str]:
    text = config.read_text()
    if "MNISTDataModule" in text:
        mnist = require_mnist(f"{config.name}")
        return [f"--data.init_args.data_dir={mnist}", "--data.init_args.train_subset=512"]
    if "ShapesDataModule" in text:
        return ["--data.init_args.n_train=256", "--data.init_args.n_val=128"]
    return []


def test_the_main_configs_exist() -> None:
    names = {p.name for p in _lightning_cli_configs()}
    assert {"shapes.yaml", "mnist_mlp.yaml"} <= names


@pytest.mark.parametrize("config", _lightning_cli_configs(), ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_fit_fast_dev_run_for_every_config(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
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
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
    common = [
        "--config=configs/cli/shapes.yaml",
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
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
    cli = build_cli(
        args=[
            "fit",
            "--model.encoder=support.modules.PlainEncoder",
            "--model.encoder.init_args.in_features=1024",
            "--model.decoder=support.modules.PlainDecoder",
            "--model.decoder.init_args.shape=[1, 32, 32]",
            "--data=lightning_vae.data.ShapesDataModule",
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


def test_bad_cli_values_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
    with pytest.raises(SystemExit):
        build_cli(args=["fit", "--config=shapes", "--model.likelihood=poisson", "--trainer.fast_dev_run=true"])
    with pytest.raises(ValueError, match=r"`beta` to be a finite float >= 0, got -1.0"):
        build_cli(
            args=[
                "fit",
                "--config=configs/cli/shapes.yaml",
                "--model.beta=-1",
                "--trainer.fast_dev_run=true",
                "--data.init_args.n_train=64",
                "--data.init_args.n_val=64",
            ]
        )


def test_print_config_has_no_stray_optimizer_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
    printed = print_config(["fit", "--config=configs/cli/shapes.yaml"], capsys)
    assert "optimizer" not in printed and "lr_scheduler" not in printed  # the optimizer is the model's argument
    assert printed["model"]["optimizer"]["class_path"] == "torch.optim.Adam"


def test_fit_without_a_config_says_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit"])
    message = str(exit_info.value.code)
    assert message.startswith("lightning-vae fit: no model to train. Pass a config: `lightning-vae fit --config shapes")
    assert "checkpoint" not in message and "--model.encoder=CLASS" in message
    assert "Seed set" not in capsys.readouterr().out  # the message comes first
    with pytest.raises(CLIError, match=r"no data module was given\. Pass --config NAME .* or --data=CLASS"):
        build_cli(
            args=["fit", "--model.encoder=support.modules.PlainEncoder", "--model.decoder=support.modules.PlainDecoder"]
        )
    with pytest.raises(CLIError, match=r"lightning-vae test: no model\. Pass --ckpt_path CKPT"):
        build_cli(args=["test", "--data=lightning_vae.data.ShapesDataModule"])


def test_checkpoints_follow_default_root_dir_unless_a_folder_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tiny = ["--data.init_args.n_train=64", "--data.init_args.n_val=32", "--trainer.enable_progress_bar=false"]
    run = ["fit", "--config=shapes", "--trainer.max_steps=1", *tiny]
    cli = build_cli(args=run)  # the config's default_root_dir: logs/shapes
    assert Path(cli.trainer.checkpoint_callback.dirpath) == tmp_path / "logs" / "shapes" / "checkpoints"
    assert (tmp_path / "logs" / "shapes" / "checkpoints" / "last.ckpt").is_file()
    cli = build_cli(args=[*run, "--trainer.default_root_dir=elsewhere"])
    assert (tmp_path / "elsewhere" / "checkpoints" / "last.ckpt").is_file()
    cli = build_cli(args=[*run, "--trainer.default_root_dir=elsewhere", "--checkpoint.dirpath=mine"])
    assert (tmp_path / "mine" / "last.ckpt").is_file()
    # and `--ckpt_path=last` finds the run's last checkpoint there
    resumed = build_cli(
        args=[*run[:3], "--trainer.max_steps=2", *tiny, "--trainer.default_root_dir=elsewhere", "--ckpt_path=last"]
    )
    assert Path(resumed.trainer.ckpt_path) == tmp_path / "elsewhere" / "checkpoints" / "last.ckpt"
    assert resumed.trainer.global_step == 2


# ---------------------------------------------------------------------------------------- evaluating a checkpoint
@pytest.fixture(scope="module")
def checkpoint_28(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_checkpoint_28(tmp_path_factory.mktemp("trained28"))


def test_test_without_a_config_restores_the_run(checkpoint_28: Path, tmp_path: Path) -> None:
    # As typed, from another folder: `lightning-vae test --ckpt_path CKPT`. The run's callbacks come back (the
    # collapse monitor's test metrics, no Lightning warning about missing callbacks), the logs go to a new version
    # in the run's own folder (not ./lightning_logs), the run's seed is used and the checkpoint folder is unchanged.
    exe = Path(sys.executable).with_name("lightning-vae")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "lightning_vae.cli"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    logs = checkpoint_28.parent.parent / "lightning_logs"  # <default_root_dir>/checkpoints/x.ckpt
    before = set(logs.iterdir())
    result = subprocess.run(
        [*command, "test", "--ckpt_path", str(checkpoint_28), "--trainer.enable_progress_bar=false"],
        capture_output=True, text=True, timeout=300, cwd=elsewhere,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "collapse/active_units" in output and "test/elbo" in output
    for warning in ("callbacks used to create the checkpoint", "The dirpath has changed", "No seed found"):
        assert warning not in output
    assert not (elsewhere / "lightning_logs").exists()
    (new,) = set(logs.iterdir()) - before  # the test run's version, beside the fit's
    assert new.name.startswith("version_") and list(new.glob("events.out.tfevents.*"))


def test_a_run_record_naming_other_classes_is_refused(checkpoint_28: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint_28, map_location="cpu", weights_only=True)
    assert state["lightning_vae_run"]["callbacks"]  # what fit recorded
    state["lightning_vae_run"]["callbacks"] = [{"class_path": "os.system", "init_args": {"command": "true"}}]
    hostile = tmp_path / "hostile.ckpt"
    torch.save(state, hostile)
    with pytest.raises(CLIError, match=r"hostile\.ckpt: the recorded callbacks: Expected `callback` to name a subcl"):
        prepare_args(["test", f"--ckpt_path={hostile}"])


def test_evaluation_with_other_data_or_no_record_fails_with_a_message(
    checkpoint_28: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
    with pytest.raises(CLIError, match=r"takes examples of shape \(1, 28, 28\) but ShapesDataModule gives \(1, 32"):
        build_cli(args=["test", f"--ckpt_path={checkpoint_28}", "--config=configs/cli/shapes.yaml"])
    # a checkpoint written by a plain Trainer records no data module
    plain = tmp_path / "plain.ckpt"
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, limit_val_batches=0))
    trainer.fit(tiny_vae(), DataLoader(TensorDataset(torch.rand(8, 1, 8, 8).round()), batch_size=4))
    trainer.save_checkpoint(plain)
    with pytest.raises(CLIError, match=r"checkpoint .*plain\.ckpt does not record its data module.*--config NAME"):
        build_cli(args=["test", f"--ckpt_path={plain}"])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"^lightning-vae test: .*garbage\.ckpt.*not a PyTorch checkpoint"):
        main(["test", f"--ckpt_path={garbage}"])
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint_28.read_bytes()[:1000])
    with pytest.raises(CLIError, match=r"truncated\.ckpt.*truncated or corrupt"):
        build_cli(args=["validate", f"--ckpt_path={truncated}"])


# ---------------------------------------------------------------------------------------- the end of fit
def test_a_run_shorter_than_an_epoch_validates_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
    cli = build_cli(
        args=[
            "fit",
            "--config=configs/cli/shapes.yaml",
            "--data.init_args.n_train=256",  # 4 batches of 64 per epoch
            "--data.init_args.n_val=64",
            "--data.init_args.batch_size=64",
            "--trainer.max_steps=3",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.trainer.global_step == 3
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["val/elbo"]) and "collapse/active_units" in metrics
    log_dir = Path(cli.trainer.logger.log_dir)
    assert (log_dir / "projector_config.pbtxt").is_file()  # the projector, written after the last validation
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"images/reconstructions", "images/samples"} <= set(events.Tags()["images"])
    assert "epoch=0-step=3" in cli.trainer.checkpoint_callback.best_model_path  # chosen by val/loss at step 3
    out = capsys.readouterr().out
    assert "lightning-vae: trained 3 steps (0.75 epochs: 3 batches of 4 per epoch)" in out
    assert "  val: ELBO" in out and "  train: ELBO" not in out


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    # As typed: `lightning-vae --help` names the commands beyond LightningCLI's four, and each one's help runs.
    exe = Path(sys.executable).with_name("lightning-vae")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "lightning_vae.cli"]
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    names = ("fit", "validate", "test", "predict", "sample", "reconstruct", "export", "configs")
    assert result.stdout.startswith(f"usage: lightning-vae {{{','.join(names)}}} ...")
    for name in names:
        assert f"\n  {name} " in result.stdout
    for name in ("sample", "reconstruct", "export", "configs"):  # in this process: the same entry point
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code in (0, None) and "--" in capsys.readouterr().out
