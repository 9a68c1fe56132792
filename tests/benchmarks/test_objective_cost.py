"""benchmarks/objective_cost.py: the table of step times and ratios to the ELBO."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from support.paths import ROOT


def _load(name: str):
    if name not in sys.modules:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_the_cost_table_gives_ratios_to_the_elbo(tmp_path: Path) -> None:
    cost = _load("objective_cost")
    out = tmp_path / "cost.json"
    argv = ["--steps", "1", "--warmup", "1", "--rounds", "1", "--batch-size", "4"]
    results = cost.main([*argv, "--objectives", "factor_vae", "--results", str(out)])
    table = results["per_objective"]
    assert list(table) == ["vae", "factor_vae"] and table["vae"]["ratio_to_elbo"] == 1.0
    assert table["factor_vae"]["median_step_cpu_ms"] > 0 and json.loads(out.read_text())["per_objective"] == table
