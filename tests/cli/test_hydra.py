"""The `lightning-vae-hydra` entry point: finds its configs also outside a checkout, and `-m` runs one job per value."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hydra", reason="needs hydra-core (a GPU check may run without it)")

import yaml  # noqa: E402
from support.hydra import CONFIG_DIR, SMALL_SHAPES, env_without_config_dir  # noqa: E402
from support.paths import ROOT  # noqa: E402

from lightning_vae.cli import hydra as entry  # noqa: E402
from lightning_vae.cli.hydra import CONFIG_DIR_ENV, find_config_dir  # noqa: E402


def _command() -> list[str]:
    exe = Path(sys.executable).with_name("lightning-vae-hydra")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lightning_vae.cli.hydra"]


def _copy_configs(target: Path, beta: float) -> Path:
    """A copy of configs/hydra/ as a user of an installed wheel keeps it, with the shapes experiment's β changed."""
    shutil.copytree(CONFIG_DIR, target)
    experiment = target / "experiment" / "shapes.yaml"
    experiment.write_text(experiment.read_text().replace("  beta: 1.0\n", f"  beta: {beta}\n"))
    return target


def test_find_config_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # a folder with configs/ of its own is not picked up by accident
    _copy_configs(tmp_path / "configs", beta=2.0)
    assert find_config_dir() == "pkg://lightning_vae.configs.hydra"  # the configs shipped in the package
    elsewhere = _copy_configs(tmp_path / "elsewhere", beta=3.0)
    monkeypatch.setenv(CONFIG_DIR_ENV, str(elsewhere))
    assert find_config_dir() == str(elsewhere)
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match=rf"Expected {CONFIG_DIR_ENV}=.*nothing.* holding train.yaml"):
        find_config_dir()


def test_a_wrong_config_dir_in_the_environment_stops_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["lightning-vae-hydra", "experiment=shapes"])
    message = rf"^lightning-vae-hydra: ValueError: Expected {CONFIG_DIR_ENV}=.* holding train.yaml"
    with pytest.raises(SystemExit, match=message):
        entry.main()


def test_the_shipped_configs_are_the_checkouts_configs() -> None:
    """One source: configs/ of the checkout is the package's folder (a link), so the two cannot differ."""
    from lightning_vae.configs import packaged_dir

    assert CONFIG_DIR.parent.resolve() == packaged_dir() == (ROOT / "lightning_vae" / "configs").resolve()
    assert CONFIG_DIR.name == "hydra"
    hydra_tree = packaged_dir() / "hydra"
    assert (hydra_tree / "train.yaml").is_file() and (hydra_tree / "experiment" / "shapes.yaml").is_file()


def test_configs_outside_the_checkout_are_used(tmp_path: Path) -> None:
    """As from an installed package: run in another folder with a copy of configs/ named by the environment."""
    copy = _copy_configs(tmp_path / "my_configs", beta=7.5)
    env = {**env_without_config_dir(), CONFIG_DIR_ENV: str(copy)}
    result = subprocess.run(
        [*_command(), "experiment=shapes", "--cfg", "job"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["beta"] == 7.5 and printed["task_name"] == "shapes"


@pytest.mark.parametrize("flag", [["--config-dir", "X"], ["--config-dir=X"], ["-cd", "X"]])
def test_the_config_dir_flag_wins_over_the_checkout(flag: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import hydra

    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)

    seen = {}

    def fake_main(**kwargs):
        seen.update(kwargs)
        return lambda task: lambda: None

    monkeypatch.setattr(hydra, "main", fake_main)
    monkeypatch.setattr(entry, "preflight", lambda argv, config_path: None)  # X holds no configs to check
    monkeypatch.setattr(sys, "argv", ["lightning-vae-hydra", *flag, "experiment=shapes"])
    entry.main()
    assert seen == {"version_base": "1.3", "config_path": None, "config_name": "train"}
    monkeypatch.setattr(sys, "argv", ["lightning-vae-hydra", "experiment=shapes"])
    entry.main()
    assert seen["config_path"] == "pkg://lightning_vae.configs.hydra"


def test_multirun_writes_one_run_and_one_tensorboard_folder_per_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *_command(),
            "-m",
            "model.beta=1.0,4.0",
            *SMALL_SHAPES,
            "model.encoder.latent_dim=4",
            "trainer.max_steps=2",
            "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            "callbacks=[images,dashboard]",
            "task_name=sweep",
        ],
        cwd=tmp_path,  # the default log folder: logs/ where the command starts
        env=env_without_config_dir(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "sweep" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    betas = []
    for job in jobs:
        assert list((job / "tensorboard").glob("events.out.tfevents.*")), f"no TensorBoard events in {job}"
        betas.append(yaml.safe_load((job / "tensorboard" / "hparams.yaml").read_text())["beta"])
        assert "model.beta=" in (job / ".hydra" / "overrides.yaml").read_text()
    assert betas == [1.0, 4.0]


def _run_in_process(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sys, "argv", ["lightning-vae-hydra", *argv, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    )
    entry.main()


def test_the_beta_sweep_runs_from_the_default_log_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    monkeypatch.delenv("LIGHTNING_VAE_LOG_DIR", raising=False)
    small = [*SMALL_SHAPES, "model.encoder.latent_dim=2", "trainer.max_steps=1", "trainer.limit_val_batches=1"]
    quiet = ["trainer.enable_progress_bar=false", "callbacks=none", "logger=csv"]
    _run_in_process(
        ["hparams_search=beta_sweep", "hydra.sweeper.params={model.beta:'0.5,2'}", *small, *quiet], monkeypatch
    )
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    assert [yaml.safe_load((sweep / j / ".hydra" / "overrides.yaml").read_text())[0] for j in jobs] == [
        "model.beta=0.5",
        "model.beta=2",
    ]


def test_fast_dev_run_writes_no_checkpoint_or_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_VAE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    _run_in_process(
        ["experiment=shapes", "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false", *SMALL_SHAPES],
        monkeypatch,
    )
    (run,) = (tmp_path / "logs" / "shapes" / "runs").iterdir()
    # Hydra's own record of the run, and nothing else: no checkpoints, no TensorBoard or CSV logs
    assert sorted(p.name for p in run.iterdir()) == [".hydra"]


# ---------------------------------------------------------------------------------------- sweeps and clusters
TINY = [
    "data.n_train=128", "data.n_val=64", "data.batch_size=64", "trainer.max_steps=2", "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false", "callbacks=none", "logger=csv",
]  # fmt: skip


def _last(csv_file: Path, key: str) -> float:
    import csv

    with open(csv_file) as f:
        values = [float(row[key]) for row in csv.DictReader(f) if row.get(key)]
    return values[-1]


def test_the_optuna_search_runs_trials_and_reports_the_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the sweeps extra is not installed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    monkeypatch.delenv("LIGHTNING_VAE_LOG_DIR", raising=False)
    # As typed, with 3 tiny trials: lightning-vae-hydra hparams_search=shapes_optuna hydra.sweeper.n_trials=3 ...
    argv = ["hparams_search=shapes_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=2"]
    _run_in_process([*argv, "model.n_eval_samples=5", *TINY], monkeypatch)
    (sweep,) = (tmp_path / "logs" / "shapes_optuna" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2"]
    nll, searched = {}, {}
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        searched[job.name] = {o.split("=")[0] for o in overrides}
        nll[job.name] = _last(job / "csv" / "metrics.csv", "val/nll_iw")
    assert all({"model.beta", "model.encoder.latent_dim", "model.optimizer.lr"} <= keys for keys in searched.values())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"model.beta", "model.encoder.latent_dim", "model.optimizer.lr"}
    assert results["best_value"] == pytest.approx(min(nll.values()), rel=1e-6)  # minimised, read from the trials


def test_the_launch_runs_a_job_through_submitit(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the sweeps extra is not installed")
    # submitit's local launcher: the job runs in a process of its own, as on a cluster node (launch=slurm's dry run).
    result = subprocess.run(
        [*_command(), "-m", "launch=local", "task_name=cluster", "model.beta=1.0,2.0", *TINY],
        cwd=tmp_path, env=env_without_config_dir(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "cluster" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        assert _last(job / "csv" / "metrics.csv", "val/loss") > 0
    submitted = list((sweep / ".submitit").rglob("*_log.out"))
    assert len(submitted) == 2  # one submitit job (its own process and log) per run
    assert "lightning-vae: trained 2 steps" in "".join(p.read_text() for p in submitted)
