"""benchmarks/reproduce.py: every experiment's smoke run, its results entry, resume, budget, schedules, evaluation."""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from support.paths import ROOT
from torch.distributions import Bernoulli, Independent, Normal

SCRIPT = ROOT / "benchmarks" / "reproduce.py"


def _load_script():
    name = "lightning_vae_reproduce_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


reproduce = _load_script()


def _smoke(name: str, tmp_path: Path, mnist_dir: Path, *extra: str) -> dict:
    argv = [
        name,
        "--smoke",
        "--smoke-steps",
        "2",
        "--data-dir",
        str(mnist_dir),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results.json"),
        "--figures-dir",
        str(tmp_path / "figures"),
        "--weights-dir",
        str(tmp_path / "weights"),
        "--checkpoints-dir",
        str(tmp_path / "checkpoints"),
        *extra,
    ]
    return reproduce.main(argv)


@pytest.mark.parametrize("name", sorted(reproduce.EXPERIMENTS))
def test_smoke_run_writes_a_complete_results_entry(name: str, tmp_path: Path, mnist_dir: Path) -> None:
    entry = _smoke(name, tmp_path, mnist_dir)
    exp = reproduce.EXPERIMENTS[name]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiments"][name] == json.loads(json.dumps(entry))
    assert set(saved["not_available"]) == set(reproduce.NOT_AVAILABLE)

    assert entry["experiment"] == name and entry["published"] == exp.published
    assert entry["reference"] == exp.reference and entry["reference"]["row"]
    # The table the figure comes from, or why it is not named (a figure that could not be read).
    assert entry["reference"]["table"] or (entry["reference"]["value"] is None and entry["reference"]["note"])
    assert entry["smoke"] is True and entry["complete"] is False
    assert entry["k"] == 10 and entry["test_size"] == 100
    assert entry["ours"]["k"] == 10 and entry["ours"]["n_images"] == 100
    # An untrained model: finite, worse than the published figure, better than coin flips (784 log 2 = 543 nats)
    # by at most what a few steps can learn.
    assert math.isfinite(entry["ours"]["nll"]) and (exp.published or 80.0) < entry["ours"]["nll"] < 700
    assert entry["epochs_run"] == 1 and entry["epochs_paper"] == exp.epochs
    assert entry["epoch_evaluated"] == 1
    assert entry["train_seconds"] >= 0 and entry["wall_seconds_this_invocation"] > 0
    assert entry["machine"]["torch"] == torch.__version__ and entry["machine"]["torch_threads"] == 1
    assert entry["command"].startswith("python benchmarks/reproduce.py " + name) and "--smoke" in entry["command"]
    assert datetime.datetime.fromisoformat(entry["date"]).tzinfo is not None
    assert [(p["epoch"], p["k"], p["n_images"]) for p in entry["history"]] == [(1, 5, 100)]
    if exp.comparable is not None:
        comparable = entry["ours_published_estimator"]
        assert comparable["rounds"] == 2 and len(comparable["values"]) == 2
        assert comparable["nll"] == pytest.approx(sum(comparable["values"]) / 2)
    else:
        assert entry["ours_published_estimator"] is None
    if entry["figure"] is not None:
        assert Path(entry["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = Path(entry["checkpoint"])
    assert checkpoint.name == ("best.ckpt" if exp.select == "best" else "last.ckpt") and checkpoint.exists()


def test_a_second_invocation_resumes_from_last_ckpt(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    first = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--epochs", "2", "--eval-every", "1")
    assert first["epochs_run"] == 2
    second = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--epochs", "5", "--eval-every", "1")
    out = capsys.readouterr().out
    assert "resuming from" in out and "(after epoch 2)" in out
    assert second["epochs_run"] == 5
    assert [p["epoch"] for p in second["history"]] == [1, 2, 3, 4, 5]
    assert second["train_seconds"] >= first["train_seconds"]
    # The schedule continued from the checkpoint: epoch 5 starts the third stage (lr 1e-3 * 10^(-2/7)).
    assert re.search(r"^epoch 5/3280 .* lr 0\.000518 ", out, re.MULTILINE)
    checkpoint = torch.load(tmp_path / "runs" / "burda_vae_1l" / "last.ckpt", map_location="cpu", weights_only=False)
    assert reproduce.epochs_done(checkpoint) == 5


def test_the_budget_stops_at_an_epoch_end(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    entry = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--epochs", "4", "--budget", "0.001")
    assert "budget of 0 s reached after epoch 1" in capsys.readouterr().out
    assert entry["epochs_run"] == 1 and (tmp_path / "runs" / "burda_vae_1l" / "last.ckpt").exists()


def test_eval_only_needs_a_checkpoint(tmp_path: Path, mnist_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No checkpoint to evaluate"):
        _smoke("burda_vae_1l", tmp_path, mnist_dir, "--eval-only")


def test_unknown_experiments_and_missing_data_are_refused(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        reproduce.main(["no_such_experiment", "--data-dir", str(mnist_dir)])
    assert "Expected an experiment" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(["burda_vae_1l", "--data-dir", str(tmp_path)])
    assert "MNIST not found" in capsys.readouterr().err
    reproduce.main(["--list"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in [*reproduce.EXPERIMENTS, *reproduce.NOT_AVAILABLE])
    assert {"burda_vae_2l", "burda_iwae_2l_k50"} <= set(reproduce.EXPERIMENTS)  # the two-layer rows run now


def test_burda_schedule_is_the_papers() -> None:
    # Stage i covers epochs (3^i - 1) / 2 .. (3^(i+1) - 1) / 2 - 1 at lr 1e-3 * 10^(-i/7) (Burda et al. 2015, Sec. 5).
    def reference(epoch: int) -> float:
        i = max(j for j in range(8) if (3**j - 1) // 2 <= epoch)
        return 10 ** (-i / 7)

    assert sum(length for length, _ in reproduce.BURDA_STAGES) == 3280
    assert reproduce.burda_stage_ends() == [1, 4, 13, 40, 121, 364, 1093, 3280]
    for epoch in [*range(0, 130), 363, 364, 1092, 1093, 3279]:
        assert reproduce.burda_lr_factor(epoch) == pytest.approx(reference(epoch), rel=1e-12)


def test_adam_norm_grad_is_adam_on_normalised_gradients() -> None:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = reproduce.AdamNormGrad(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(8, 5)
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (net(x) ** 2).sum().backward()
        for p in b.parameters():
            p.grad /= p.grad.norm() + 1e-7
        opt_a.step()
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("kind", ["adam", "norm_grad"])
def test_fused_adam_is_the_same_update_and_survives_a_restored_state(kind: str) -> None:
    """The callback switches a restored optimizer (whose saved settings say "not fused") to the fused kernel."""
    torch.manual_seed(0)
    make = reproduce.AdamNormGrad if kind == "norm_grad" else torch.optim.Adam
    a, b = torch.nn.Linear(30, 20), torch.nn.Linear(30, 20)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = make(a.parameters(), lr=1e-3, eps=1e-4), make(b.parameters(), lr=1e-3, eps=1e-4)
    for step in range(200):
        if step == 50:  # a resume: the saved state (default implementation) loaded, then the callback
            restored = make(b.parameters(), lr=1e-3, eps=1e-4)
            restored.load_state_dict(opt_b.state_dict())
            opt_b = restored
            reproduce.FusedAdam().on_train_start(type("T", (), {"optimizers": [opt_b]})(), None)
            assert all(g["fused"] is True for g in opt_b.param_groups)
        x = torch.randn(16, 30)
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (net(x).tanh() ** 2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_fused_adam_leaves_other_optimizers_and_devices_alone() -> None:
    net = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    reproduce.FusedAdam().on_train_start(type("T", (), {"optimizers": [sgd]})(), None)
    assert "fused" not in sgd.param_groups[0] or not sgd.param_groups[0]["fused"]
    assert not reproduce.use_fused(torch.optim.Adam([torch.zeros(2, dtype=torch.float64, device="meta")]))


def test_evaluation_is_reproducible_and_leaves_the_random_state_alone() -> None:
    torch.manual_seed(0)
    model = reproduce.EXPERIMENTS["burda_vae_1l"].build(torch.full((1, 28, 28), 0.2))
    images = torch.bernoulli(torch.full((30, 1, 28, 28), 0.2))
    state = torch.get_rng_state()
    first = reproduce.evaluate_nll(model, images, 20, batch_size=7, chunk_size=50, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    second = reproduce.evaluate_nll(model, images, 20, batch_size=7, chunk_size=50, progress=False)
    assert first["nll"] == second["nll"] and first["n_images"] == 30 and first["k"] == 20
    assert math.isfinite(first["stderr"])


def _reference_iw_nll(model, images: torch.Tensor, k: int) -> float:
    """log p(x) by importance sampling in float64 with torch.distributions, independent of the package's code."""
    generator = torch.Generator().manual_seed(99)
    total = 0.0
    with torch.no_grad():
        for x in images.split(25):
            loc, log_var = (t.double() for t in model.encoder(x))
            q = Independent(Normal(loc, (0.5 * log_var).exp()), 1)
            eps = torch.randn((k, *loc.shape), generator=generator, dtype=torch.float64)
            z = loc + eps * (0.5 * log_var).exp()
            logits = model.decoder(z.float().reshape(-1, z.shape[-1])).double().reshape(k, x.shape[0], -1)
            log_px_z = Independent(Bernoulli(logits=logits), 1).log_prob(x.flatten(1).double())
            log_pz = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1).log_prob(z)
            log_w = log_px_z + log_pz - q.log_prob(z)
            total -= float((torch.logsumexp(log_w, 0) - math.log(k)).sum())
    return total / images.shape[0]


@pytest.mark.slow
def test_saved_model_re_evaluates_to_the_printed_and_saved_figure(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    entry = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--smoke-steps", "200", "--smoke-train", "4000")
    printed = re.search(r"RESULT burda_vae_1l: test NLL ([0-9.]+) nats", capsys.readouterr().out)
    assert printed is not None
    saved = json.loads((tmp_path / "results.json").read_text())["experiments"]["burda_vae_1l"]
    assert f"{saved['ours']['nll']:.4f}" == printed.group(1) == f"{entry['ours']['nll']:.4f}"

    again = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--eval-only")
    assert again["ours"]["nll"] == saved["ours"]["nll"]  # same checkpoint, same evaluation seed
    assert f"RESULT burda_vae_1l: test NLL {printed.group(1)} nats" in capsys.readouterr().out

    # The script's estimate agrees with an independent float64 importance-sampling estimate on the saved weights.
    k = 2000
    estimate = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--eval-only", "--final-k", str(k))["ours"]["nll"]
    model = reproduce.EXPERIMENTS["burda_vae_1l"].build(torch.full((1, 28, 28), 0.5))
    reproduce._load_weights(model, tmp_path / "runs" / "burda_vae_1l" / "last.ckpt")
    model.eval()
    dm = reproduce.MNISTDataModule(str(mnist_dir), val_size=400, binarize="dynamic")
    dm.setup("test")
    assert dm.test_set is not None
    reference = _reference_iw_nll(model, dm.test_set.tensors[0][:100], k)
    assert estimate == pytest.approx(reference, abs=0.5)
    assert estimate < 200  # the 200 steps trained: far below an untrained model's ~205 nats


def test_plot_only_redraws_the_figure_from_the_results(tmp_path: Path, mnist_dir: Path) -> None:
    entry = _smoke("burda_vae_1l", tmp_path, mnist_dir)
    if entry["figure"] is None:
        pytest.skip("matplotlib is not installed")
    figure = Path(entry["figure"])
    figure.unlink()
    assert _smoke("burda_vae_1l", tmp_path, mnist_dir, "--plot-only") == json.loads(json.dumps(entry))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="No entry for vamp_k500"):
        _smoke("vamp_k500", tmp_path, mnist_dir, "--plot-only")


def test_no_eval_trains_without_touching_the_results(tmp_path: Path, mnist_dir: Path) -> None:
    entry = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--no-eval")
    assert entry["ours"] is None and entry["epochs_run"] == 1
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "figures").exists()
    assert (tmp_path / "runs" / "burda_vae_1l" / "last.ckpt").exists()


def test_training_ships_weights_and_a_resume_file_that_a_fresh_clone_uses(
    tmp_path: Path, mnist_dir: Path, capsys
) -> None:
    pytest.importorskip("safetensors")
    first = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--epochs", "2")
    weights = tmp_path / "weights" / "burda_vae_1l.safetensors"
    resume = tmp_path / "checkpoints" / "burda_vae_1l" / "resume.pt"
    assert first["weights"]["sha256"] == reproduce.sha256(weights) and first["weights"]["bytes"] > 0
    assert first["resume_checkpoint"]["epochs_run"] == 2 and first["fraction_of_budget"] == round(2 / 3280, 4)
    # The resume file holds no pickled code.
    assert set(torch.load(resume, map_location="cpu", weights_only=True)) <= set(reproduce.RESUME_KEYS)

    # A fresh clone: no run folder. The shipped weights re-evaluate to the same figure (same seeds, same data).
    import shutil

    shutil.rmtree(tmp_path / "runs")
    again = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--eval-only", "--weights", str(weights))
    assert again["ours"]["nll"] == first["ours"]["nll"]
    assert again["epochs_run"] == 2 and again["weights"]["sha256"] == first["weights"]["sha256"]
    assert "evaluation" in capsys.readouterr().out

    # Training again resumes from the repository's resume file, at epoch 2, with the schedule where it was.
    third = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--epochs", "5")
    out = capsys.readouterr().out
    assert "resuming from the repository's" in out and "(after epoch 2)" in out
    assert re.search(r"^epoch 5/3280 .* lr 0\.000518 ", out, re.MULTILINE)
    assert third["epochs_run"] == 5 and third["resume_checkpoint"]["epochs_run"] == 5


def test_weights_are_refused_without_eval_only_or_when_missing(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        _smoke("burda_vae_1l", tmp_path, mnist_dir, "--weights", str(tmp_path / "x.safetensors"))
    assert "use it with --eval-only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _smoke("burda_vae_1l", tmp_path, mnist_dir, "--eval-only", "--weights", str(tmp_path / "x.safetensors"))
    assert "no such file" in capsys.readouterr().err


def test_export_only_moves_the_resume_file_on_and_keeps_the_rows_figure(tmp_path: Path, mnist_dir: Path) -> None:
    first = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--epochs", "1")
    _smoke("burda_vae_1l", tmp_path, mnist_dir, "--epochs", "2", "--no-eval")
    out = _smoke("burda_vae_1l", tmp_path, mnist_dir, "--export-only")
    assert out["resume_checkpoint"]["epochs_run"] == 2
    entry = json.loads((tmp_path / "results.json").read_text())["experiments"]["burda_vae_1l"]
    assert entry["resume_checkpoint"]["epochs_run"] == 2
    assert entry["ours"]["nll"] == first["ours"]["nll"] and entry["weights"] == first["weights"]
    assert entry["epochs_run"] == 1
    checkpoint = torch.load(tmp_path / "checkpoints" / "burda_vae_1l" / "resume.pt", weights_only=True)
    assert reproduce.epochs_done(checkpoint) == 2
