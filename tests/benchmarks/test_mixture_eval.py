"""benchmarks/mixture_eval.py runs and reports both forms, the matrix products the more accurate."""

from __future__ import annotations

import runpy
import sys

import pytest
from support.paths import ROOT


def test_mixture_eval_smoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mixture_eval.py", "--samples", "1000", "--components", "300", "--dim", "56", "--rounds", "2"]
    monkeypatch.setattr(sys, "argv", argv)  # 1000 x 300 x 56 >= 2^24: the matrix products apply
    runpy.run_path(str(ROOT / "benchmarks" / "mixture_eval.py"), run_name="__main__")
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in capsys.readouterr().out.splitlines()[3:]}
    assert set(rows) == {"broadcast", "matrix products"}
    errors = {name: float(cells[2]) for name, cells in rows.items()}
    assert errors["matrix products"] <= errors["broadcast"] + 1e-7 and errors["matrix products"] < 1e-6
