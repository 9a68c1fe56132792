"""benchmarks/shapes_quality.py runs on a checkpoint and reports what its figures are made of."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from support.checkpoints import train_checkpoint
from support.images import decode_png
from support.paths import ROOT

SCRIPT = str(ROOT / "benchmarks" / "shapes_quality.py")


def test_shapes_quality_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run").mkdir()
    checkpoint = train_checkpoint(tmp_path / "run")
    out, figure, weights = tmp_path / "q.json", tmp_path / "q.png", tmp_path / "judge.pt"
    argv = ["shapes_quality.py", "--ckpt_path", str(checkpoint), "--n_train", "96", "--epochs", "1", "--n_val", "40"]
    argv += ["--n_samples", "16", "--output", str(out), "--figure", str(figure), "--classifier", str(weights)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(SCRIPT, run_name="__main__")
    first = json.loads(out.read_text())
    assert first["ratio"] == pytest.approx(first["reconstructions"]["accuracy"] / first["originals"]["accuracy"])
    assert 0.0 <= first["samples"]["confident"] <= 1.0 and sum(first["samples"]["shares"]) == pytest.approx(1.0)
    assert set(first["reconstructions"]["per_shape"]) == {"square", "ellipse", "heart"}
    assert decode_png(figure.read_bytes()).shape[2] == 1 and weights.is_file()
    # A second checkpoint is judged by the same classifier: loaded, not trained again, the same verdicts.
    runpy.run_path(SCRIPT, run_name="__main__")
    second = json.loads(out.read_text())
    assert second["originals"] == first["originals"] and second["reconstructions"] == first["reconstructions"]
    assert torch.load(weights, weights_only=True)  # a plain state dict
