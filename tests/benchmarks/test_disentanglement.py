"""benchmarks/disentanglement.py: the smoke run's results and figure, resuming, refusing mixed settings, the
orderings' summary."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from support.paths import ROOT


def _load(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_the_smoke_run_writes_results_with_the_commit_and_a_figure_and_resumes(tmp_path: Path) -> None:
    bench = _load("disentanglement")
    argv = ["--smoke", "--objectives", "beta_vae,beta_tcvae"]
    argv += ["--results", str(tmp_path / "r.json"), "--figure", str(tmp_path / "f.png")]
    results = bench.main(argv)
    assert sorted(results["runs"]) == ["beta_tcvae/0", "beta_vae/0"]
    metrics = results["runs"]["beta_tcvae/0"]["metrics"]
    for key in ("mig", "dci_disentanglement", "sap", "factor_vae_score", "elbo", "recon", "total_correlation"):
        assert key in metrics
    # The exact decomposition: the three parts sum to the closed-form KL.
    parts = metrics["mutual_info"] + metrics["total_correlation"] + metrics["dimension_kl"]
    assert parts == pytest.approx(metrics["kl"], rel=1e-4, abs=1e-4)
    assert results["commit"] is None or len(results["commit"].split("-")[0]) == 40
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ordering = results["summary"]["orderings"]["chen_tcvae_mig_above_beta_vae"]
    assert ordering["holds"] == (ordering["beta_tcvae"] > ordering["beta_vae"])
    # Resuming trains nothing more: the stored runs come back as they were.
    again = bench.main(argv)
    assert again["runs"] == json.loads((tmp_path / "r.json").read_text())["runs"] == results["runs"]
    with pytest.raises(SystemExit, match="other settings"):
        bench.main([*argv, "--beta", "2.0"])


def test_the_summary_checks_the_published_orderings() -> None:
    bench = _load("disentanglement")
    runs = {
        f"{name}/{seed}": {"metrics": {"mig": base + 0.1 * seed}}
        for name, base in (("beta_vae", 0.1), ("beta_tcvae", 0.2))
        for seed in range(3)
    }
    summary = bench.summarise(runs, list(bench.NAMES))
    assert summary["per_objective"]["beta_tcvae"]["mig"]["mean"] == pytest.approx(0.3)
    assert summary["orderings"]["chen_tcvae_mig_above_beta_vae"]["holds"]
    spread = summary["orderings"]["locatello_seed_spread_vs_objective_spread"]
    assert spread["mean_seed_std_of_mig"] == pytest.approx(0.1) and spread["holds"]
