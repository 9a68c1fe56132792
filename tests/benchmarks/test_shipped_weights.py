"""Shipped weights (benchmarks/weights/) and resume checkpoints (benchmarks/checkpoints/): every file is the one the
results name (SHA-256), loads into the model its row builds, and gives a finite forward pass; every reported row has
its weights; the resume files load without pickled code and hold what a resume needs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from support.paths import ROOT

pytest.importorskip("safetensors")

WEIGHTS_DIR = ROOT / "benchmarks" / "weights"
CHECKPOINTS_DIR = ROOT / "benchmarks" / "checkpoints"
RESULTS = ROOT / "benchmarks" / "reproduction_results.json"
SIDE_BY_SIDE = ROOT / "benchmarks" / "pythae_side_by_side.json"
SHIPPED = sorted(WEIGHTS_DIR.glob("*.safetensors"))
REPRODUCTION_WEIGHTS = [p for p in SHIPPED if not p.name.startswith("side_by_side_")]
SIDE_BY_SIDE_WEIGHTS = [p for p in SHIPPED if p.name.startswith("side_by_side_")]


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


reproduce = _load("lightning_vae_reproduce_script", ROOT / "benchmarks" / "reproduce.py")
side_by_side = _load("lightning_vae_side_by_side_script", ROOT / "benchmarks" / "pythae_side_by_side.py")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reported_rows() -> dict:
    return json.loads(RESULTS.read_text())["experiments"]


def test_every_reported_row_ships_its_weights_and_the_files_stay_small() -> None:
    rows = _reported_rows()
    assert rows, "no reported rows"
    for name, entry in rows.items():
        assert name in reproduce.EXPERIMENTS, f"{name} is reported but not in the registry"
        path = ROOT / entry["weights"]["path"]
        assert path.parent == WEIGHTS_DIR and path.exists(), f"{name}: no shipped weights at {path}"
        assert entry["weights"]["sha256"] == _digest(path), f"{name}: the results name another file than {path}"
        # The row's own figure is that of the shipped weights' epoch.
        config = json.loads(path.with_suffix(".json").read_text())
        assert config["epoch_of_weights"] == entry["epoch_evaluated"]
        assert config["epochs_run"] == entry["epochs_run"]
        assert 0 < entry["fraction_of_budget"] <= 1
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir())
    assert total < 40 * 2**20, f"shipped weights take {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("path", REPRODUCTION_WEIGHTS, ids=lambda p: p.stem)
def test_reproduction_weights_match_their_digest_and_run_forward(path: Path) -> None:
    config = json.loads(path.with_suffix(".json").read_text())
    assert config["experiment"] == path.stem and config["sha256"] == _digest(path)
    model = reproduce.EXPERIMENTS[path.stem].build(torch.full((1, 28, 28), 0.5))
    loaded = reproduce.load_weights_file(model, path, expected_sha256=config["sha256"])
    assert loaded["epoch_of_weights"] >= 1
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        # Images the model itself finds likely (its own samples, thresholded): no MNIST needed.
        x = (model.sample(4) > 0.5).float()
        terms, _ = model.compute_terms(x)
    elbo = float(terms.elbo.mean())
    # A trained model: finite, and far better than coin flips (784 log 2 = 543 nats per image).
    assert math.isfinite(elbo) and -543 < elbo < 0
    nll = reproduce.evaluate_nll(model, x, 8, progress=False)["nll"]
    assert math.isfinite(nll) and 0 < nll < 543


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    if not REPRODUCTION_WEIGHTS:
        pytest.skip("no shipped weights")
    source = REPRODUCTION_WEIGHTS[0]
    copy = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    copy.with_suffix(".json").write_text(source.with_suffix(".json").read_text())
    model = reproduce.EXPERIMENTS[source.stem].build(torch.full((1, 28, 28), 0.5))
    with pytest.raises(ValueError, match="Expected .* to have SHA-256"):
        reproduce.load_weights_file(model, copy)


@pytest.mark.parametrize("name", sorted(p.parent.name for p in CHECKPOINTS_DIR.glob("*/resume.pt")))
def test_resume_checkpoints_load_without_code_and_hold_a_resume(name: str) -> None:
    path = CHECKPOINTS_DIR / name / "resume.pt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint) <= set(reproduce.RESUME_KEYS)
    assert {"state_dict", "optimizer_states", "loops", "lr_schedulers", "callbacks"} <= set(checkpoint)
    model = reproduce.EXPERIMENTS[name].build(torch.full((1, 28, 28), 0.5))
    model.load_state_dict(checkpoint["state_dict"])
    assert reproduce.epochs_done(checkpoint) >= 1
    assert checkpoint["optimizer_states"][0]["state"], "no optimiser moments"


def test_every_checkpoint_folder_is_a_reproduction_row_or_an_m2_run_folder() -> None:
    """reproduce.py's rows keep `resume.pt`; m2_mnist.py's run folders `n<N>_seed<S>/last.ckpt` (its own test)."""
    for folder in sorted(p for p in CHECKPOINTS_DIR.glob("*") if p.is_dir()):
        if folder.name.startswith("m2"):
            assert sorted(folder.glob("n*_seed*/last.ckpt")), folder
        else:
            assert folder.name in reproduce.EXPERIMENTS and (folder / "resume.pt").is_file(), folder


@pytest.mark.parametrize("path", SIDE_BY_SIDE_WEIGHTS, ids=lambda p: p.stem)
def test_side_by_side_weights_match_their_digest_and_run_forward(path: Path) -> None:
    side = path.stem.removeprefix("side_by_side_")
    results = json.loads(SIDE_BY_SIDE.read_text())
    assert results[f"train_{side}"]["result"]["weights"]["sha256"] == _digest(path)
    model = side_by_side.build_ours()
    model.load_state_dict(side_by_side.neutral_to_ours(side_by_side.load_neutral(path)))
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        x = (model.sample(4) > 0.5).float()
        terms, _ = model.compute_terms(x)
    assert math.isfinite(float(terms.elbo.mean())) and -543 < float(terms.elbo.mean()) < 0
