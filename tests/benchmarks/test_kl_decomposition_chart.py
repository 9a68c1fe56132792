"""benchmarks/kl_decomposition_chart.py: the monitor's values over training, for the ELBO and β-TCVAE."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from support.paths import ROOT


def test_the_chart_holds_the_three_parts_and_their_sum_per_epoch(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location(
        "kl_decomposition_chart", ROOT / "benchmarks" / "kl_decomposition_chart.py"
    )
    assert spec is not None and spec.loader is not None
    chart = importlib.util.module_from_spec(spec)
    sys.modules["kl_decomposition_chart"] = chart
    spec.loader.exec_module(chart)
    results_path, figure_path = tmp_path / "chart.json", tmp_path / "chart.png"
    chart.main(["--smoke", "--results", str(results_path), "--figure", str(figure_path)])
    results = json.loads(results_path.read_text())
    assert list(results["runs"]) == ["ELBO", "β-TCVAE, β = 6"]
    for rows in results["runs"].values():
        assert [row["epoch"] for row in rows] == [1, 2]
        for row in rows:  # the three parts sum to the KL the monitor logs beside them
            parts = sum(row[k] for k in ("mutual_info", "total_correlation", "dimension_kl"))
            assert parts == pytest.approx(row["kl"], rel=1e-4, abs=1e-4)
    assert figure_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
