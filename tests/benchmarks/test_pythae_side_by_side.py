"""benchmarks/pythae_side_by_side.py without pythae: the data file, the schedule, the weight layout, and this suite's
evaluator against pythae's estimator re-implemented from its ``VAE.get_nll`` (float64) on the same weights."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.paths import ROOT


def _load():
    name = "lightning_vae_side_by_side_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "pythae_side_by_side.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


side = _load()


def test_schedule_is_pythaes_multisteplr() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[200, 350, 500, 750, 1000], gamma=10**-0.2)
    for epoch in range(520):
        assert side.lr_factor(epoch) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9)
        optimizer.step()
        scheduler.step()


@pytest.mark.slow  # writes the binarised MNIST file three times (~30 s)
def test_data_file_is_one_static_draw_of_mnist(tmp_path: Path, mnist_dir: Path) -> None:
    path = tmp_path / "binarized.npz"
    info = side.write_data(mnist_dir, path, seed=7)
    assert (info["n_train"], info["n_valid"], info["n_test"]) == (50_000, 10_000, 10_000)
    data = side.load_data(path)
    assert set(torch.unique(data["train"]).tolist()) == {0.0, 1.0} and data["test"].shape == (10_000, 1, 28, 28)
    grey = side._read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28) / 255.0
    # Pixels at 0 stay 0 and at 1 stay 1; the mean matches the grey levels' mean (a Bernoulli draw of each pixel).
    assert bool((data["test"][torch.from_numpy(grey == 0)] == 0).all())
    assert bool((data["test"][torch.from_numpy(grey == 1)] == 1).all())
    assert abs(float(data["test"].mean()) - float(grey.mean())) < 1e-3
    # The same seed gives the same bits; another seed other bits.
    assert side._sha256(path) == side.write_data(mnist_dir, tmp_path / "again.npz", seed=7)["sha256"]
    other = side.load_data(Path(side.write_data(mnist_dir, tmp_path / "other.npz", seed=8)["path"]))
    assert not torch.equal(other["train"], data["train"])


def test_weight_layout_round_trips() -> None:
    model = side.build_ours()
    state = model.state_dict()
    back = side.neutral_to_ours(side.ours_to_neutral(state))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    neutral = side.ours_to_neutral(state)
    assert neutral["encoder.loc.weight"].shape == (40, 400) and neutral["decoder.out.weight"].shape == (784, 400)


def _pythae_get_nll(neutral: dict[str, torch.Tensor], x: torch.Tensor, k: int, seed: int) -> float:
    """pythae's ``VAE.get_nll`` (vae_model.py) re-implemented in float64: per image, k samples from q in batches of
    100, BCE of sigmoid means, log p(z) and log q(z|x) without their log 2 pi (they cancel), log-mean-exp."""
    w = {n: t.double() for n, t in neutral.items()}
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for image in x.reshape(x.shape[0], -1).double():
        h = torch.relu(image @ w["encoder.hidden.weight"].T + w["encoder.hidden.bias"])
        mu = h @ w["encoder.loc.weight"].T + w["encoder.loc.bias"]
        log_var = h @ w["encoder.log_var.weight"].T + w["encoder.log_var.bias"]
        eps = torch.randn(k, mu.shape[0], generator=gen, dtype=torch.float64)
        z = mu + eps * torch.exp(0.5 * log_var)
        log_q = -0.5 * (log_var + (z - mu) ** 2 / torch.exp(log_var)).sum(-1)
        log_p_z = -0.5 * (z**2).sum(-1)
        probs = torch.sigmoid(
            torch.relu(z @ w["decoder.hidden.weight"].T + w["decoder.hidden.bias"]) @ w["decoder.out.weight"].T
            + w["decoder.out.bias"]
        )
        log_px = -F.binary_cross_entropy(probs, image.expand_as(probs), reduction="none").sum(-1)
        total += float(torch.logsumexp(log_px + log_p_z - log_q, 0) - math.log(k))
    return -total / x.shape[0]


def test_this_suites_evaluator_agrees_with_pythaes_estimator_on_the_same_weights() -> None:
    repro = side._ours_module()
    model = side.build_ours()
    with torch.no_grad():  # the pixel rate of the data in the output bias, as a trained model has it
        model.model.decoder.head.bias.fill_(math.log(0.15 / 0.85))
    x = torch.bernoulli(torch.full((20, 1, 28, 28), 0.15), generator=torch.Generator().manual_seed(1))
    ours = repro.evaluate_nll(model, x, 1000, progress=False)["nll"]
    reference = _pythae_get_nll(side.ours_to_neutral(model.state_dict()), x, 1000, seed=5)
    # Two independent k = 1000 estimates of the same 20 likelihoods: Monte Carlo noise only.
    assert ours == pytest.approx(reference, abs=0.05)
    assert np.isfinite(ours) and ours > 0


def test_seeds_keep_their_weights_and_results_apart() -> None:
    assert side.weights_path("ours") == side.WEIGHTS["ours"]
    assert side.weights_path("pythae", 7).name == "side_by_side_pythae_seed7.safetensors"
    assert side.section("train-ours") == "train_ours" and side.section("eval-pythae", 7) == "eval_pythae_seed7"


def test_seed_spread_over_runs() -> None:
    import statistics

    def evaluation(ours: float, pythae: float) -> dict:
        return {"result": {"ours": {"nll": ours}, "pythae": {"nll": pythae}}}

    one = side.seed_spread({"eval_ours": evaluation(100.0, 99.0), "eval_pythae": evaluation(0.0, 0.0)})
    assert one["seed_spread"] is None and one["ours_within_spread"] is None and one["model_difference_mean"] == 1.0
    results = {
        "eval_ours": evaluation(100.0, 99.0),
        "eval_ours_seed1": evaluation(101.0, 100.5),
        "eval_ours_seed2": evaluation(99.5, 99.9),
        "eval_pythae_seed1": evaluation(0.0, 0.0),  # the other evaluator: not part of the spread
    }
    spread = side.seed_spread(results)
    assert set(spread["per_seed"]) == {str(side.TRAIN_SEED), "1", "2"}
    ours, pythae = [100.0, 101.0, 99.5], [99.0, 100.5, 99.9]
    assert spread["by_side"]["ours"]["sd"] == pytest.approx(statistics.stdev(ours))
    assert spread["seed_spread"] == pytest.approx(max(statistics.stdev(ours), statistics.stdev(pythae)))
    difference = statistics.fmean(ours) - statistics.fmean(pythae)
    assert spread["model_difference_mean"] == pytest.approx(difference)
    assert spread["ours_within_spread"] is (difference <= spread["seed_spread"])
    # The evaluators compared on seed 1's weights only (the one seed with both).
    assert spread["evaluator_difference_per_seed"] == {"1": {"ours": 101.0, "pythae": 100.5}}
    assert spread["evaluator_difference_max_abs"] == 101.0
    assert one["evaluator_difference_per_seed"] == {str(side.TRAIN_SEED): {"ours": 100.0, "pythae": 99.0}}


def test_missing_data_or_weights_are_named_in_one_line(monkeypatch, capsys) -> None:
    def no_data(path=None):
        raise FileNotFoundError("No data file x.npz: run `python benchmarks/pythae_side_by_side.py data` first")

    monkeypatch.setattr(side, "load_data", no_data)
    with pytest.raises(SystemExit) as exit_info:
        side.main(["eval-ours", "--k", "2"])
    assert exit_info.value.code == 2 and "error: No data file x.npz" in capsys.readouterr().err
    monkeypatch.setattr(side, "load_data", lambda path=None: {"test": torch.zeros(3, 1, 28, 28)})
    with pytest.raises(SystemExit) as exit_info:
        side.main(["eval-pythae", "--seed", "424242", "--k", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "side_by_side_ours_seed424242.safetensors" in err and "train-pythae --seed 424242" in err
