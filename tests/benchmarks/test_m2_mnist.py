"""benchmarks/m2_mnist.py (its --smoke run writes a complete results entry and resumes) and
benchmarks/m2_class_sum.py (the three timed steps run and are reported)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.paths import ROOT


def _load(name: str):
    key = f"lightning_vae_benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def _smoke_argv(tmp_path: Path, mnist_dir: Path, labels: int, seed: int) -> list[str]:
    """A --smoke run of one (N, seed) writing only under ``tmp_path``."""
    return [
        "--smoke",
        "--labels", str(labels),
        "--seeds", str(seed),
        "--data-dir", str(mnist_dir),
        "--runs-dir", str(tmp_path / "runs"),
        "--results", str(tmp_path / "results.json"),
        "--figure", str(tmp_path / "m2.png"),
    ]  # fmt: skip


def test_smoke_run_writes_results_with_commit_seeds_and_departures(tmp_path: Path, mnist_dir: Path) -> None:
    script = _load("m2_mnist")
    argv = _smoke_argv(tmp_path, mnist_dir, labels=100, seed=0)
    results = script.main(argv)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    run = saved["runs"]["n100_seed0"]
    assert run["epochs"] == 1 and 0.0 <= run["test_error_at_best_val"] <= 100.0
    assert saved["by_labels"]["100"]["published"] == {"mean": 11.97, "sd": 1.71}
    assert saved["by_labels"]["100"]["within_published_error_bar"] is None  # one seed: no claim
    assert len(saved["commit"]) == 40 and saved["departures"] and saved["budget"]
    other = saved["independent_reimplementation"]
    assert "e051b288db529502f2a703caa2c56cc9bea20b32" in other["source"] and "lr 3e-4" in other["setup"]
    assert sorted(map(int, other["test_error_by_epoch"])) == sorted(script.PUBLISHED)
    for trajectory in other["test_error_by_epoch"].values():
        epochs = [int(e) for e in trajectory]
        assert epochs == sorted(epochs) and epochs[-1] == 3000 and all(0 < v < 100 for v in trajectory.values())
    # Running again resumes from last.ckpt: nothing left to train at the same --epochs, the history is kept.
    again = script.main(argv)
    assert again["runs"]["n100_seed0"]["history"] == run["history"]


def test_a_learning_rate_from_an_epoch_on_overrides_the_resumed_checkpoints(tmp_path: Path, mnist_dir: Path) -> None:
    script = _load("m2_mnist")
    argv = _smoke_argv(tmp_path, mnist_dir, labels=3000, seed=1)
    first = script.main([*argv, "--lr", "1e-3"])["runs"]["n3000_seed1"]["history"]
    assert [h["lr"] for h in first] == [1e-3]
    # The second epoch resumes from the first's checkpoint (Adam's lr 1e-3 in it) and runs at the scheduled rate.
    results = script.main([*argv, "--lr", "1e-3", "--epochs", "2", "--lr-from", "2", "3e-4"])
    history = results["runs"]["n3000_seed1"]["history"]
    assert [h["lr"] for h in history] == [1e-3, 3e-4] and history[0] == first[0]
    assert results["setup"]["lr_from"] == [[2, 3e-4]]
    checkpoint = torch.load(tmp_path / "runs" / "n3000_seed1" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 3e-4
    assert script.learning_rate(1, 1e-3, [(2, 3e-4), (5, 1e-4)]) == 1e-3
    assert script.learning_rate(4, 1e-3, [(5, 1e-4), (2, 3e-4)]) == 3e-4
    assert script.learning_rate(9, 1e-3, [(2, 3e-4), (5, 1e-4)]) == 1e-4


def test_only_smoke_runs_go_to_the_smoke_folder_by_default() -> None:
    script = _load("m2_mnist")
    run, smoke = script.parse_args([]), script.parse_args(["--smoke"])
    assert (run.epochs, run.runs_dir, run.results) == (20, str(script.RUNS_DIR), str(script.RESULTS_PATH))
    assert smoke.epochs == 1 and Path(smoke.runs_dir).name == "m2_smoke"
    assert Path(smoke.results).parent.name == "m2_smoke"
    assert Path(script.parse_args(["--smoke", "--epochs", "2"]).runs_dir).name == "m2_smoke"


@pytest.mark.parametrize("bad", [["0", "1e-3"], ["2.5", "1e-3"], ["3", "nan"], ["3", "0"]])
def test_a_bad_learning_rate_schedule_is_refused_by_name(bad: list[str], capsys) -> None:
    script = _load("m2_mnist")
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--lr-from", *bad])
    assert exit_info.value.code == 2
    assert "--lr-from takes a whole epoch >= 1 and a learning rate > 0" in capsys.readouterr().err


def test_the_papers_initialisation_draws_every_weight_and_zeroes_every_bias() -> None:
    script = _load("m2_mnist")
    torch.manual_seed(0)
    paper = {k: v.detach() for k, v in script.build(100, 3e-4, init_std=1e-3).model.named_parameters()}
    default = {k: v.detach() for k, v in script.build(100, 3e-4).model.named_parameters()}
    assert paper.keys() == default.keys() and len(paper) == 12
    for name, parameter in paper.items():
        if name.endswith("bias"):
            assert not parameter.any() and default[name].any()
        else:
            assert abs(float(parameter.std()) - 1e-3) < 1e-4 and abs(float(parameter.mean())) < 1e-4
            assert float(default[name].std()) > 1e-2


def test_a_run_started_with_one_initialisation_is_not_resumed_with_another(tmp_path: Path, mnist_dir: Path) -> None:
    script = _load("m2_mnist")
    argv = _smoke_argv(tmp_path, mnist_dir, labels=100, seed=2)
    results = script.main([*argv, "--init-std", "1e-3", "--lr", "3e-4"])
    assert results["runs"]["n100_seed2"]["init"] == results["setup"]["init"] == "N(0, 0.001^2), biases 0"
    assert not any(d.startswith("PyTorch default") for d in results["departures"])
    assert any("no Gaussian prior on the weights" in d for d in results["departures"])
    started = "last.ckpt was started with init .N\\(0, 0.001\\^2\\), biases 0.*--init-std"
    with pytest.raises(ValueError, match=started):
        script.main([*argv, "--epochs", "2", "--lr", "3e-4"])
    with pytest.raises(ValueError, match="started with init "):
        script.main([*argv, "--epochs", "2", "--lr", "3e-4", "--init-std", "1e-2"])
    # From the command line: one line naming the file, exit status 2, no traceback.
    command = [sys.executable, str(ROOT / "benchmarks" / "m2_mnist.py"), *argv, "--epochs", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("m2_mnist.py: error: ")
    assert str(tmp_path / "runs" / "n100_seed2" / "last.ckpt") in done.stderr
    # Nothing was lost: the run still has its one epoch, and resumes under its own initialisation.
    again = script.main([*argv, "--epochs", "2", "--lr", "3e-4", "--init-std", "1e-3"])["runs"]["n100_seed2"]
    assert again["epochs"] == 2 and again["history"][0] == results["runs"]["n100_seed2"]["history"][0]


def test_the_reference_codes_batch_proportion_is_recorded_and_kept_on_resume(tmp_path: Path, mnist_dir: Path) -> None:
    script = _load("m2_mnist")
    argv = [*_smoke_argv(tmp_path, mnist_dir, labels=100, seed=0), "--batch", "499", "1"]
    results = script.main(argv)
    assert results["runs"]["n100_seed0"]["batch"] == results["setup"]["batch"] == "499 unlabelled + 1 labelled"
    assert any(d.startswith("batches of 499 unlabelled + 1 labelled") for d in results["departures"])
    with pytest.raises(ValueError, match="last.ckpt was started with batch '499 unlabelled \\+ 1 labelled'.*--batch"):
        script.main([*argv[:-3], "--epochs", "2"])
    assert script.main([*argv, "--epochs", "2"])["runs"]["n100_seed0"]["epochs"] == 2
    # The data module gets the sizes: one training batch holds 499 unlabelled examples and 1 labelled one.
    dm = script.SemiSupervisedMNISTDataModule(
        str(mnist_dir), n_labelled=100, seed=0, batch_size=499, labelled_batch_size=1
    )
    dm.setup("fit")
    _, labels = next(iter(dm.train_dataloader()))
    assert int((labels < 0).sum()) == 499 and int((labels >= 0).sum()) == 1


@pytest.mark.parametrize("bad", [["0", "1"], ["100", "0"]])
def test_a_bad_batch_composition_is_refused_by_name(bad: list[str], capsys) -> None:
    script = _load("m2_mnist")
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--batch", *bad])
    assert exit_info.value.code == 2
    assert "--batch takes two counts >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_a_damaged_run_checkpoint_is_named_in_one_line(tmp_path: Path, mnist_dir: Path, damage: str) -> None:
    script = _load("m2_mnist")
    argv = _smoke_argv(tmp_path, mnist_dir, labels=100, seed=1)
    script.main(argv)
    last = tmp_path / "runs" / "n100_seed1" / "last.ckpt"
    if damage == "truncate":  # a kill in the middle of a save
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    else:
        torch.save([1, 2, 3], last)
    with pytest.raises(ValueError, match="last.ckpt is not a"):
        script.main([*argv, "--epochs", "2"])
    command = [sys.executable, str(ROOT / "benchmarks" / "m2_mnist.py"), *argv, "--summarise"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"m2_mnist.py: error: {last} is not a")


@pytest.mark.parametrize("bad", ["0", "-1e-3", "nan", "inf"])
def test_a_bad_initial_standard_deviation_is_refused_by_name(bad: str, capsys) -> None:
    script = _load("m2_mnist")
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([f"--init-std={bad}"])
    assert exit_info.value.code == 2
    assert "--init-std takes a standard deviation > 0" in capsys.readouterr().err


def test_the_timed_steps_run_and_report_their_ratios() -> None:
    """Each step trains every network (the bound itself is checked against a per-class loop in
    tests/objective/test_m2.py)."""
    script = _load("m2_class_sum")
    torch.manual_seed(0)
    model = script.build()
    x, y = torch.rand(5, 1, 28, 28), torch.tensor([-1, -1, -1, 4, 7])
    for name, step in script.steps(model, x, y).items():
        model.zero_grad(set_to_none=True)
        step()
        for part in (model.encoder, model.decoder, model.classifier):
            grads = [p.grad for p in part.parameters()]
            assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), name
    result = script.main(["--unlabelled", "2", "--labelled", "1", "--repeats", "1", "--warmup", "0"])
    assert set(result["median_ms"]) == {"class_sum", "one_class", "class_loop"}
    assert result["ratio_class_sum_to_one_class"] > 0


def test_the_committed_results_follow_from_their_own_histories() -> None:
    """benchmarks/m2_results.json: every summary figure is recomputed from the per-epoch histories beside it."""
    import statistics

    script = _load("m2_mnist")
    results = json.loads((ROOT / "benchmarks" / "m2_results.json").read_text())
    assert len(results["commit"]) == 40 and results["departures"] and results["budget"]
    for key, run in results["runs"].items():
        history = run["history"]
        assert key == f"n{run['n_labelled']}_seed{run['seed']}" and run["epochs"] == len(history)
        assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
        best = min(history, key=lambda h: h["val_error"])
        assert (run["best_val_epoch"], run["test_error_at_best_val"]) == (best["epoch"], best["test_error"])
        assert run["test_error_last"] == history[-1]["test_error"]
    for n, summary in results["by_labels"].items():
        chosen = [r["test_error_at_best_val"] for r in results["runs"].values() if r["n_labelled"] == int(n)]
        assert summary["published"] == dict(zip(("mean", "sd"), script.PUBLISHED[int(n)]))
        assert summary["seeds"] == len(chosen)
        assert summary["test_error_mean"] == pytest.approx(statistics.fmean(chosen))
        low, high = summary["published"]["mean"] - summary["published"]["sd"], sum(summary["published"].values())
        assert summary["within_published_error_bar"] == (low <= summary["test_error_mean"] <= high)


def test_the_committed_resume_checkpoints_hold_the_reported_histories() -> None:
    """benchmarks/checkpoints/m2*/n<N>_seed<S>/last.ckpt: `--runs-dir` pointed at one of these folders resumes the
    reported runs on another machine; each holds exactly the history its results JSON reports."""
    script = _load("m2_mnist")
    reported = {
        "m2": json.loads((ROOT / "benchmarks" / "m2_results.json").read_text()),
        "m2_batch499_lr3e-4": json.loads((ROOT / "benchmarks" / "m2_probe_n100_batch499_lr3e-4.json").read_text()),
        "m2_batch499_lr1e-3": json.loads((ROOT / "benchmarks" / "m2_probe_n100_batch499_lr1e-3.json").read_text()),
    }
    found = 0
    for folder, results in reported.items():
        for last in sorted((ROOT / "benchmarks" / "checkpoints" / folder).glob("n*_seed*/last.ckpt")):
            state = script.read_state(last.parent)
            run = results["runs"][last.parent.name]
            assert state["history"] == run["history"], last
            assert script.started_with(state) == {"init": run["init"], "batch": run["batch"]}
            found += 1
    assert found == 5  # N = 3000, seeds 0-2, and the two N = 100 probes
