"""main and the configs command (cli/commands.py): the console script runs LightningCLI and prints a summary, the
after-training commands are dispatched, a command line that cannot run exits with its message, and the shipped
configs are listed and copied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.cli import SHAPES_TWO_STEPS
from support.paths import ROOT

from lightning_vae.cli import main

SHIPPED = ROOT / "lightning_vae" / "configs"


def test_console_script_prints_a_summary(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("lightning-vae")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "lightning_vae.cli"]
    result = subprocess.run(
        [*command, *SHAPES_TWO_STEPS, f"--trainer.default_root_dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ELBO" in result.stdout and "KL" in result.stdout
    assert "tensorboard --logdir" in result.stdout and "checkpoint:" in result.stdout


def test_the_commands_after_training_are_dispatched(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for command in ("sample", "reconstruct", "export"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, f"--ckpt_path={tmp_path / 'missing.ckpt'}"])
        assert exit_info.value.code == 2  # the after-training parser's usage error, not LightningCLI's
        assert f"lightning-vae {command}: error: " in capsys.readouterr().err


def test_a_command_line_that_cannot_run_exits_with_its_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "no_such_config"])
    message = str(exit_info.value.code)
    assert message.startswith("lightning-vae fit: Expected `--config` to be a YAML file or the name of a shipped")
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--data=lightning_vae.data.ShapesDataModule"])
    assert str(exit_info.value.code).startswith("lightning-vae test: no model. Pass --ckpt_path")  # one prefix


def _lightning_cli_names() -> list[str]:
    """The shipped LightningCLI configs, found by reading every YAML under cli/ (no Hydra defaults or targets)."""
    names = []
    for path in sorted((SHIPPED / "cli").rglob("*.yaml")):
        content = yaml.safe_load(path.read_text())
        if isinstance(content, dict) and "defaults" not in content and "_target_" not in content:
            names.append(path.relative_to(SHIPPED / "cli").with_suffix("").as_posix())
    return names


def test_configs_lists_the_shipped_configs(capsys: pytest.CaptureFixture) -> None:
    main(["configs"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Configs shipped with lightning-vae, in {SHIPPED}:"
    listed = lines[1].split(": ", 1)[1].split(", ")
    assert lines[1].startswith("  LightningCLI (lightning-vae fit --config NAME): ")
    assert listed == _lightning_cli_names() and "shapes" in listed and "annealing/cyclical" in listed
    experiments = sorted(p.stem for p in (SHIPPED / "hydra" / "experiment").glob("*.yaml"))
    assert lines[2] == "  Hydra experiments (lightning-vae-hydra experiment=NAME): " + ", ".join(experiments)
    assert lines[3] == "Copy them for editing with: lightning-vae configs --copy DIR"


def test_configs_copy_writes_every_yaml_and_refuses_a_non_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "mine"
    main(["configs", "--copy", str(target)])
    shipped = sorted(p.relative_to(SHIPPED).as_posix() for p in SHIPPED.rglob("*.yaml"))
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert copied == shipped  # the YAML files, no Python
    assert all((target / name).read_bytes() == (SHIPPED / name).read_bytes() for name in shipped)
    out = capsys.readouterr().out
    assert out.startswith(f"lightning-vae configs: copied the configs to {target}")
    assert f"lightning-vae fit --config {target / 'cli' / 'shapes.yaml'}" in out
    (target / "cli" / "shapes.yaml").write_text("edited\n")
    (target / "mine.txt").write_text("kept\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["configs", "--copy", str(target)])
    assert exit_info.value.code == 2 and "exists and is not empty; name a new folder, or pass --force" in (
        capsys.readouterr().err
    )
    main(["configs", "--copy", str(target), "--force"])
    assert (target / "cli" / "shapes.yaml").read_bytes() == (SHIPPED / "cli" / "shapes.yaml").read_bytes()
    assert (target / "mine.txt").read_text() == "kept\n"  # files of other names are kept
