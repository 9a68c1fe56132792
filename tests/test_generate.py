"""After training: `lightning-vae sample` and `lightning-vae reconstruct` (generate.py) from a checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support.checkpoints import DATA, loaded, train_checkpoint, val_images
from support.images import decode_png, quantize, reference_grid

from lightning_vae.cli import main


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


@pytest.mark.parametrize("name", ["shapes", "configs/shapes.yaml"])
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
