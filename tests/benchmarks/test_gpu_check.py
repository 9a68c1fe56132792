"""benchmarks/gpu_check.sh --dry-run: every step of the GPU check rehearsed on the CPU, without hydra-core, omegaconf
and jsonargparse and with the package found through PYTHONPATH only, so the script cannot rot before a GPU runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.paths import ROOT


def test_the_gpu_check_rehearses_every_step_on_the_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        cwd=tmp_path,  # the script finds the repository itself
        env=env,
        capture_output=True,
        text=True,
        timeout=2000,
    )
    report = json.loads((tmp_path / "out" / "gpu_check_results.json").read_text())
    steps = report["steps"]
    assert proc.returncode == 0, proc.stdout + json.dumps({k: v["log_tail"] for k, v in steps.items()}, indent=1)
    assert report["dry_run"] and set(steps) == {"pytest_gpu", "throughput", "sync", "ddp", "fsdp_refusal"}
    assert all(step["exit"] == 0 for step in steps.values())
    assert (tmp_path / "out" / "logs" / "pytest_gpu.log").is_file()

    # pytest collected the whole tree without Hydra: its modules skipped, the GPU tests skipped for want of CUDA.
    pytest_log = (tmp_path / "out" / "logs" / "pytest_gpu.log").read_text()
    assert "needs hydra-core" in pytest_log and "needs a CUDA device" in pytest_log and "error" not in pytest_log
    # The three contenders in the three precisions.
    figures = steps["throughput"]["result"]["models"]["mlp"]
    assert set(figures) == {"32-true", "bf16-mixed", "16-mixed"}
    assert all(set(f["medians"]) == {"VAE", "lightning", "plain"} for f in figures.values())
    # Quiet steps found in each model's run.
    sync = steps["sync"]["result"]
    assert set(sync) == {"default", "mixture", "vamp"}
    assert all(r["ok"] and r["quiet_steps_checked"] > 0 for r in sync.values())
    # Two processes against one.
    ddp = steps["ddp"]["result"]
    assert ddp["ok"] and ddp["weights_identical_on_both_ranks"] and "gloo" in ddp["mode"]
    assert "skipped" in steps["fsdp_refusal"]["result"]
