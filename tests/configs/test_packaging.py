"""The package as a user installs it: the wheel carries the configs, and its commands run from an empty folder.

The wheel is built from a copy of the sources (pip, setuptools already installed, no network, no build/ folder in
the checkout). The fast tests install it with ``pip install --target`` and run the commands with that folder first
on ``PYTHONPATH``; the slow test installs it into a fresh virtual environment that sees this environment's
packages through a ``.pth`` file (so torch is not downloaded again) and runs the main job and a Hydra experiment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from support.paths import MNIST_DIR, ROOT, require_mnist

from lightning_vae.configs import copy_to, lightning_cli_configs, packaged_dir

CONFIGS = ROOT / "lightning_vae" / "configs"
TINY_CLI = [
    "--data.init_args.n_train=64",
    "--data.init_args.n_val=32",
    "--data.init_args.batch_size=32",
    "--trainer.max_steps=3",
    "--trainer.enable_progress_bar=false",
]
TINY_HYDRA = [
    "data.n_train=64",
    "data.n_val=32",
    "data.batch_size=32",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTNING_VAE_")}
    env.update({"PYTHONWARNINGS": "ignore", **extra})
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the current sources, built from a copy (the configs link is not needed there)."""
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "lightning_vae", source / "lightning_vae", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("lightning_vae-*.whl")
    return built


def test_the_wheel_carries_every_config(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("lightning_vae/configs/") and n.endswith(".yaml")}
    in_source = {f"lightning_vae/configs/{p.relative_to(CONFIGS).as_posix()}" for p in CONFIGS.rglob("*.yaml")}
    assert shipped == in_source and len(shipped) > 60
    assert "lightning_vae/configs/hydra/train.yaml" in shipped and "lightning_vae/configs/cli/shapes.yaml" in shipped


def test_the_declared_license_ships_with_its_text(wheel: Path) -> None:
    declared = re.search(r'^license = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert declared is not None and declared.group(1) == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    with zipfile.ZipFile(wheel) as archive:
        (license_file,) = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_file).decode() == text
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_one_copy_of_the_configs_in_git() -> None:
    """Top-level configs/ is a link to the package's folder: the YAML files exist once in the repository."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run([git, "ls-files", "-s", "configs"], cwd=ROOT, capture_output=True, text=True).stdout
    assert listed.startswith("120000 "), f"configs should be a symbolic link in git, got {listed[:200]!r}"
    assert (ROOT / "configs").resolve() == CONFIGS.resolve() == packaged_dir()


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return target


#: Run in one interpreter from an empty folder with only the installed wheel's lightning_vae importable: what each
#: command prints, as JSON (one process: importing torch and Lightning dominates the time).
DRIVER = """
import contextlib, io, json, sys
import lightning_vae, lightning_vae.configs as configs
from lightning_vae.cli import hydra as entry
from lightning_vae.cli import main

def call(function, argv=None):
    buffer = io.StringIO()
    code = 0
    if argv is not None:
        sys.argv = argv
    with contextlib.redirect_stdout(buffer):
        try:
            function()
        except SystemExit as exit:
            code = exit.code
    return {"out": buffer.getvalue(), "code": code if isinstance(code, (int, type(None))) else str(code)}

report = {"package": lightning_vae.__file__, "configs_dir": str(configs.packaged_dir())}
report["list"] = call(lambda: main(["configs"]))
report["print_config"] = call(lambda: main(["fit", "--config", "shapes", "--print_config"]))
report["no_config"] = call(lambda: main(["fit"]))
report["hydra"] = call(entry.main, ["lightning-vae-hydra", "experiment=shapes_beta_vae", "--cfg", "job"])
report["copy"] = call(lambda: main(["configs", "--copy", "my_configs"]))
print("REPORT" + json.dumps(report))
"""


def test_the_installed_package_finds_its_configs_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER],
        cwd=tmp_path,
        env=_clean_env(PYTHONPATH=str(installed)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert Path(report["package"]).is_relative_to(installed)  # the installed copy, not the source checkout
    assert Path(report["configs_dir"]) == installed / "lightning_vae" / "configs"
    assert "shapes" in report["list"]["out"] and "mnist_collapse" in report["list"]["out"]
    assert report["print_config"]["code"] in (0, None)
    assert yaml.safe_load(report["print_config"]["out"])["data"]["class_path"] == "lightning_vae.data.ShapesDataModule"
    message = str(report["no_config"]["code"])
    assert "lightning-vae fit --config shapes" in message and "When loading a checkpoint" not in message
    assert yaml.safe_load(report["hydra"]["out"])["task_name"] == "shapes_beta_vae"
    copy = tmp_path / "my_configs"
    assert (copy / "hydra" / "train.yaml").is_file() and (copy / "hydra" / "experiment" / "shapes.yaml").is_file()
    assert (copy / "cli" / "shapes.yaml").is_file()
    assert not (copy / "__init__.py").exists() and not (copy / "hydra" / "__init__.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_configs"]  # printing and composing wrote nothing


def test_copy_to_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = copy_to(tmp_path / "c")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.yaml")) == sorted(
        p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")
    )
    (target / "cli" / "shapes.yaml").write_text("edited: true\n")
    with pytest.raises(ValueError, match="exists and is not empty; name a new folder, or pass --force"):
        copy_to(target)
    copy_to(target, force=True)
    assert "edited" not in (target / "cli" / "shapes.yaml").read_text()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="to name a folder, got the file"):
        copy_to(tmp_path / "file")
    assert "shapes" in lightning_cli_configs() and "train" not in lightning_cli_configs()


# ---------------------------------------------------------------------------------------- data paths
def test_no_shipped_config_reads_data_relative_to_the_current_folder() -> None:
    for path in CONFIGS.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("data_dir", "root", "path") and not line.lstrip().startswith("#"):
                value = value.split("#")[0].strip()
                assert value in ("null", "") or value.startswith("${") or os.path.isabs(value), f"{path}: {line}"


def test_the_mnist_folder_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_vae.data import MNISTDataModule

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_VAE_MNIST_DIR", raising=False)
    unset = MNISTDataModule()
    with pytest.raises(ValueError, match=r"pass `data_dir` .* or set LIGHTNING_VAE_MNIST_DIR=DIR"):
        unset.setup("fit")
    monkeypatch.setenv("LIGHTNING_VAE_MNIST_DIR", str(MNIST_DIR))
    from_env = MNISTDataModule(train_subset=64, val_size=32)
    assert from_env.hparams.data_dir == str(MNIST_DIR)  # the folder used is the one recorded
    assert MNISTDataModule(str(tmp_path)).hparams.data_dir == str(tmp_path)  # an argument wins
    require_mnist()
    from_env.setup("fit")
    assert len(from_env.train_set) == 64


# ---------------------------------------------------------------------------------------- a fresh environment
@pytest.mark.slow
def test_a_fresh_environment_runs_the_main_job_and_a_hydra_experiment(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # torch, lightning, hydra... from this environment; lightning_vae only from the wheel
    (site / "_this_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    empty = tmp_path / "project"
    empty.mkdir()
    env = _clean_env()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=empty, env=env, capture_output=True, text=True, timeout=900)

    where = run(str(python), "-c", "import lightning_vae; print(lightning_vae.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    fit = run(str(venv / "bin" / "lightning-vae"), "fit", "--config", "shapes", *TINY_CLI)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "lightning-vae: trained 3 steps" in fit.stdout and "val: ELBO" in fit.stdout
    assert list((empty / "logs" / "shapes").rglob("*.ckpt"))
    hydra = run(str(venv / "bin" / "lightning-vae-hydra"), "experiment=shapes_beta_vae", *TINY_HYDRA)
    assert hydra.returncode == 0, hydra.stderr[-3000:]
    (run_dir,) = (empty / "logs" / "shapes_beta_vae" / "runs").iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "tensorboard").is_dir()
