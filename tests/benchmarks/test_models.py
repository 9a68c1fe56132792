"""benchmarks/models.py: the smoke run's results and figure, resuming, the kept entry, the active-unit estimator."""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from support.paths import ROOT

from lightning_vae.distributions.posteriors import DiagonalGaussian
from lightning_vae.models import LatentVariableModel
from lightning_vae.models.base import Inference

SCRIPT = ROOT / "benchmarks" / "models.py"


def _load_script():
    name = "lightning_vae_models_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bench = _load_script()


def _smoke(tmp_path: Path, mnist_dir: Path, *extra: str) -> dict:
    argv = ["--smoke", "--data-dir", str(mnist_dir), "--runs-dir", str(tmp_path / "runs")]
    argv += ["--results", str(tmp_path / "results.json"), "--figure", str(tmp_path / "models.png"), *extra]
    return bench.main(argv)


class _RecordingKLAnnealing(bench.KLAnnealing):
    """The benchmark's KL annealing callback, recording the β the module trains each step with."""

    betas: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        type(self).betas.append(float(pl_module.beta))


def test_smoke_run_of_every_model_writes_results_and_figure(
    tmp_path: Path, mnist_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "KLAnnealing", _RecordingKLAnnealing)
    monkeypatch.setattr(_RecordingKLAnnealing, "betas", [])
    results = _smoke(tmp_path, mnist_dir)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    names = bench.available_models()
    assert {"vae_1l", "stacked_2l", "ladder_3l", "ladder_3l_warmup"} <= set(names)
    assert list(results["models"]) == names
    assert set(results["not_run"]) == set(bench.MODELS) - set(names)
    groups = {"vae_1l": ["z"], "stacked_2l": ["z2", "z1"], "ladder_3l": ["z3", "z2", "z1"], "vae_iaf": ["z"]}
    groups["ladder_3l_warmup"] = groups["ladder_3l"]
    dims = {"vae_1l": [50], "stacked_2l": [50, 100], "ladder_3l": [16, 32, 64], "vae_iaf": [50]}
    dims["ladder_3l_warmup"] = dims["ladder_3l"]
    out = capsys.readouterr().out
    for name, entry in results["models"].items():
        assert entry["smoke"] is True and entry["epochs"] == 1 and entry["batch_size"] == 100
        assert entry["groups"] == groups[name]
        ev = entry["eval"]
        assert ev["k"] == 10 and ev["n_images"] == 200 and ev["elbo_samples"] == 10
        # Three steps from the data-mean output bias: finite, far worse than the published figure, better than coin
        # flips (784 log 2 = 543 nats); the IW estimate is at least the ELBO (to its Monte Carlo noise).
        assert entry["published"]["nll"] < ev["nll"] < 543
        assert math.isfinite(ev["stderr"]) and ev["stderr"] > 0
        assert -ev["elbo"] > ev["nll"] - 3 * ev["elbo_stderr"]
        assert list(ev["active_units"]) == groups[name]
        for group, dim in zip(groups[name], dims[name]):
            units = ev["active_units"][group]
            assert units["dims"] == dim == len(units["variance"])
            assert 0 <= units["active"] <= dim
        assert entry["train_seconds"] >= 0 and ev["seconds"] >= 0
        assert datetime.datetime.fromisoformat(entry["date"]).tzinfo is not None
        assert (tmp_path / "runs" / name / "last.ckpt").exists()
        assert entry["code"]["commit"] is None or len(entry["code"]["commit"]) == 40
        assert (len(entry["flow_forget_bias"]) == 1) == (name == "vae_iaf")
        assert (entry["kl_warmup"] is not None) == (name == "ladder_3l_warmup")
        assert f"RESULT {name}: test NLL" in out
    # The warm-up row: the same model as ladder_3l; its one smoke epoch (300 images, batch 100: 3 steps) is the whole
    # linear ramp, so the module trains with beta = t / 3 at steps t = 0, 1, 2; the other rows keep beta = 1.
    warm = results["models"]["ladder_3l_warmup"]
    assert warm["n_parameters"] == results["models"]["ladder_3l"]["n_parameters"]
    assert warm["class"] == results["models"]["ladder_3l"]["class"] == "LadderVAEModel"
    assert warm["kl_warmup"] == {
        "callback": "KLAnnealing('linear', start=0.0, end=1.0, length=3)",
        "steps": 3,
        "epochs": 1,
        "steps_per_epoch": 3,
        "beta_at_last_step": pytest.approx(2 / 3),
    }
    assert _RecordingKLAnnealing.betas == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert results["machine"]["torch"] == torch.__version__
    assert "--smoke" in results["last_command"]
    if results.get("figure") is not None:
        assert Path(results["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Running again resumes each model's run folder; an entry that evaluates the same checkpoint is kept.
    again = _smoke(tmp_path, mnist_dir, "--models", "vae_1l", "--epochs", "2")
    out = capsys.readouterr().out
    assert "vae_1l: training to epoch 2" in out and "resuming from" in out and "(after epoch 1)" in out
    assert again["models"]["vae_1l"]["epochs"] == 2
    assert again["models"]["ladder_3l"] == results["models"]["ladder_3l"]  # untouched
    kept = _smoke(tmp_path, mnist_dir, "--models", "vae_1l", "--epochs", "2")
    assert "the results entry already evaluates this checkpoint (epoch 2); kept" in capsys.readouterr().out
    assert kept["models"]["vae_1l"] == again["models"]["vae_1l"]
    # An entry of other weights (a retrained or changed model) is evaluated again.
    saved = json.loads((tmp_path / "results.json").read_text())
    saved["models"]["vae_1l"]["weights_sha256"] = "0" * 64
    (tmp_path / "results.json").write_text(json.dumps(saved))
    fresh = _smoke(tmp_path, mnist_dir, "--models", "vae_1l", "--epochs", "2")
    assert "vae_1l: evaluating epoch 2" in capsys.readouterr().out
    assert fresh["models"]["vae_1l"]["weights_sha256"] == again["models"]["vae_1l"]["weights_sha256"]
    same_draws = [{k: v for k, v in e["models"]["vae_1l"]["eval"].items() if k != "seconds"} for e in (fresh, again)]
    assert same_draws[0] == same_draws[1]  # the same weights and evaluation seed: the same estimates


def test_warmup_spans_the_steps_of_the_first_half_of_the_epochs() -> None:
    warm = bench.MODELS["ladder_3l_warmup"]
    assert warm.build is bench.MODELS["ladder_3l"].build and warm.warmup_fraction == 0.5
    assert bench.warmup_steps(warm, 20, 600) == 10 * 600  # the benchmark: 20 epochs of 60,000 images, batch 100
    assert bench.warmup_steps(warm, 1, 3) == 3  # at least one epoch
    assert bench.warmup_steps(warm, 5, 7) == 2 * 7  # round(2.5) epochs, to even
    for name in ("vae_1l", "stacked_2l", "ladder_3l", "vae_iaf"):
        assert bench.warmup_steps(bench.MODELS[name], 20, 600) is None


def test_bad_arguments_are_refused(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    for argv, message in [
        (["--models", "vae_1l,nope"], "Expected --models to name models among"),
        (["--models", "vae_1l,vae_1l"], "distinct models"),
        (["--k", "0"], "Expected --k to be >= 1"),
        (["--test-size", "20000"], "at most the 10,000 test images"),
        (["--budget", "-1"], "positive number of seconds"),
        (["--mc-samples", "1"], "Expected --mc-samples to be >= 2"),
    ]:
        with pytest.raises(SystemExit):
            bench.parse_args([*argv, "--data-dir", str(mnist_dir)])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--data-dir", str(tmp_path)])
    assert "MNIST not found" in capsys.readouterr().err


class _TwoGroups(LatentVariableModel):
    """q(a | x) = N(x, 1) and q(b | x, a) = N(a, 1): E_q[b | x] = x, while the mean of b at one draw of a is a."""

    group_names = ("b", "a")

    def inference(self, x, n_samples=1):
        qa = DiagonalGaussian(x, torch.zeros_like(x))
        a = qa.rsample((n_samples,))
        qb = DiagonalGaussian(a, torch.zeros_like(a))
        return Inference({"b": qb, "a": qa}, {"b": qb.rsample(), "a": a})

    def generative(self, z, x=None):  # pragma: no cover - not used
        raise NotImplementedError

    def prior_sample(self, n):  # pragma: no cover - not used
        raise NotImplementedError


def test_active_units_use_the_marginal_posterior_mean() -> None:
    # Dimension 0 of x varies (variance 0.04 > 0.01), dimension 1 barely (1e-4): the marginal posterior means of
    # both groups have those variances; at one draw of `a`, b's mean carries a's unit variance in every dimension.
    torch.manual_seed(0)
    n = 4000
    x = torch.stack([0.2 * torch.randn(n), 0.01 * torch.randn(n)], dim=1)
    estimates = bench.posterior_means(_TwoGroups(), x, mc_samples=400)
    a, b = (bench.active_units(e["mean"], e["noise"], e.get("one_sample")) for e in (estimates["a"], estimates["b"]))
    assert a["active"] == 1 and a["variance"] == pytest.approx(x.double().var(0).tolist(), abs=1e-6)
    assert "active_given_one_sample" not in a
    assert b["active"] == 1 and b["variance"] == pytest.approx(x.double().var(0).tolist(), abs=0.004)
    assert b["active_given_one_sample"] == 2
    with pytest.raises(ValueError, match="at least 2"):
        bench.posterior_means(_TwoGroups(), x, mc_samples=1)
