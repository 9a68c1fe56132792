"""benchmarks/throughput.py: the three contenders, and the measurement repeated in fresh processes."""

from __future__ import annotations

import subprocess
import sys

from support.paths import ROOT, require_mnist

SCRIPT = ROOT / "benchmarks" / "throughput.py"


def test_the_measurement_is_repeated_in_fresh_processes() -> None:
    quick = ["--runs", "1", "--max-steps", "2", "--warmup", "0", "--threads", "1", "--processes", "2"]
    data = ["--data-dir", str(require_mnist("the throughput benchmark"))]
    done = subprocess.run([sys.executable, str(SCRIPT), *quick, *data], check=True, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    processes = [line for line in lines if line.startswith("process ")]
    assert [line.split(":")[0] for line in processes] == ["process 1", "process 2"]
    for line in processes:  # each child's JSON read back: two positive ratios
        ratios = [float(word) for word in line.replace(",", " ").split() if word.replace(".", "").isdigit()]
        assert len(ratios) == 2 and all(r > 0 for r in ratios), line
    assert sum(line.startswith("CPU-time, 2 processes x 1 runs: VAE / lightning") for line in lines) == 1
