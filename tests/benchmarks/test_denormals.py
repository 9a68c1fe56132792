"""benchmarks/denormals.py: its quick run measures every configuration in a fresh process, with the flush mode
taking effect there (a subnormal input gives an all-zero product when flushed), and its arguments are checked."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from support.paths import ROOT


def _load():
    key = "lightning_vae_benchmark_denormals"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / "denormals.py")
        assert spec is not None and spec.loader is not None
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def test_quick_run_measures_every_configuration_with_its_flush_mode(tmp_path: Path) -> None:
    results = _load().main(["--quick", "--output", str(tmp_path / "d.json")])
    assert json.loads(json.dumps(results)) == json.loads((tmp_path / "d.json").read_text())
    rows = {(r["input"], r["flush"]): r for r in results["rows"]}
    assert set(rows) == {("subnormal", False), ("subnormal", True), ("normal", False), ("normal", True)}
    # Flushed, the subnormal input reads as zero in the worker process; not flushed, the product is tiny but not 0.
    assert rows[("subnormal", True)]["product_is_zero"] is True
    assert rows[("subnormal", False)]["product_is_zero"] is False
    assert rows[("normal", True)]["product_is_zero"] is False
    assert set(results["ratios"]) == {"matmul_subnormal_vs_normal_1t", "matmul_subnormal_unflushed_vs_flushed_1t"}
    assert all(value > 0 for value in results["ratios"].values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--m2-checkpoint", "no/such/last.ckpt"], "--m2-checkpoint: no file at no/such/last.ckpt"),
        (["--rounds", "0"], "--rounds, --m2-steps and --threads must be >= 1"),
        (["--threads", "0"], "--rounds, --m2-steps and --threads must be >= 1"),
    ],
)
def test_bad_arguments_are_refused_by_name(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _load().parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_truncated_m2_checkpoint_is_named_in_one_line(tmp_path: Path, capsys) -> None:
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    argv = ["--quick", "--m2-checkpoint", str(checkpoint), "--output", str(tmp_path / "d.json")]
    with pytest.raises(SystemExit) as exit_info:
        _load().main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1].startswith("denormals.py: the m2_steps measurement failed in its process: ")
    assert f"{checkpoint} is not a readable last.ckpt of benchmarks/m2_mnist.py" in err[-1]
    assert not (tmp_path / "d.json").exists()
