"""Both commands end on an error with one line naming the problem and the file or argument, a non-zero exit status,
and the traceback only when asked for (``--debug`` or ``LIGHTNING_VAE_DEBUG=1``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException
from support.paths import ROOT

from lightning_vae.cli import main
from lightning_vae.cli.hydra import main as hydra_main
from lightning_vae.training.faults import NonFiniteError

TESTS = ROOT / "tests"


def _nan_data(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).random((16, 1, 8, 8)).astype(np.float32)
    x[9, 0, 2, 2] = np.nan
    path = tmp_path / "train.npy"
    np.save(path, x)
    return path


def _fit_args(tmp_path: Path) -> list[str]:
    return [
        "fit",
        "--model.encoder=lightning_vae.nets.MLPEncoder",
        "--model.encoder.input_shape=[1, 8, 8]",
        "--model.encoder.latent_dim=2",
        "--model.decoder=lightning_vae.nets.MLPDecoder",
        "--model.decoder.latent_dim=2",
        "--model.decoder.output_shape=[1, 8, 8]",
        "--model.likelihood=gaussian",
        "--data=lightning_vae.data.TensorDataModule",
        f"--data.train={_nan_data(tmp_path)}",
        "--data.batch_size=4",
        "--data.shuffle=false",
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]


def test_a_non_finite_error_in_fit_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(_fit_args(tmp_path))
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message  # printed to stderr, exit status 1
    assert message.startswith("lightning-vae fit: NonFiniteError: ")
    assert "NaN or infinite values" in message and "(training: global step" in message  # the problem and where
    assert message.endswith("(run again with --debug or LIGHTNING_VAE_DEBUG=1 for the traceback)")


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_the_traceback_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.chdir(tmp_path)
    args = _fit_args(tmp_path)
    if how == "flag":
        monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
        args.append("--debug")
    else:
        monkeypatch.setenv("LIGHTNING_VAE_DEBUG", "1")
    with pytest.raises(NonFiniteError, match="NaN or infinite values"):
        main(args)


def test_a_wrong_argument_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main([*_fit_args(tmp_path), "--model.beta=lots"])
    message = str(exit_info.value.code)
    assert message.startswith("lightning-vae fit: ArgumentError: ") and "model.beta" in message and "lots" in message
    assert "\n" not in message


def test_hydra_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    for argv, expected in (
        (["model/encoder=no_such_option"], "model/encoder"),  # composition: Hydra's own error
        (["data.n_train=-3", "trainer.max_steps=1"], "n_train"),  # the run: a data module's argument check
    ):
        monkeypatch.setattr(sys, "argv", ["lightning-vae-hydra", *argv])
        with pytest.raises(SystemExit) as exit_info:
            hydra_main()
        message = str(exit_info.value.code)
        assert message.startswith("lightning-vae-hydra: ") and expected in message and "\n" not in message
        assert "HYDRA_FULL_ERROR" not in os.environ  # restored after the command
    monkeypatch.setattr(sys, "argv", ["lightning-vae-hydra", "data.n_train=-3", "trainer.max_steps=1", "--debug"])
    with pytest.raises(InstantiationException, match="n_train"):  # the traceback: Hydra's own exception
        hydra_main()


def _command(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]), **(env or {})}
    environment.pop("LIGHTNING_VAE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=environment, capture_output=True, text=True, timeout=300
    )


def test_the_commands_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    """Real processes: the exit status, and stderr holding the one line (no traceback) unless asked for."""
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00" * 64)
    cli = _command("lightning_vae.cli", "validate", f"--ckpt_path={garbage}")
    assert cli.returncode == 1
    assert cli.stderr.strip().splitlines()[-1].startswith("lightning-vae validate: ")
    assert "garbage.ckpt" in cli.stderr and "Traceback" not in cli.stderr
    hydra = _command("lightning_vae.cli.hydra", env={"LIGHTNING_VAE_CONFIG_DIR": str(tmp_path)})
    assert hydra.returncode == 1 and "Traceback" not in hydra.stderr
    assert hydra.stderr.strip().splitlines()[-1].startswith("lightning-vae-hydra: ValueError: Expected")
    debug = _command("lightning_vae.cli", "validate", f"--ckpt_path={garbage}", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
