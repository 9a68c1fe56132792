#!/usr/bin/env bash
# GPU check of lightning-vae, under 8 minutes on one GPU (each step has its own time limit; 7.5 min in all):
#   1. the GPU tests: pytest -m gpu (16-mixed with a sane initial GradScaler scale, bf16-mixed, FSDP on one GPU
#      with rank-zero callbacks, torch.compile against eager, the GPU trainer configs);
#   2. training throughput of VAE vs the same loss in a minimal LightningModule vs a hand-written loop, for the
#      MLP and the conv VAE (benchmarks/gpu_throughput.py);
#   3. a 2-process DDP run: one GPU per process when there are two, else both processes on one GPU over gloo
#      (benchmarks/ddp_gpu.py), and with two GPUs the refusal of FSDP over two processes.
# Everything lands in one JSON file: the first argument, else benchmarks/gpu_check_results.json.
#
#   bash benchmarks/gpu_check.sh results.json
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=$(realpath -m "${1:-benchmarks/gpu_check_results.json}")
WORK=$(mktemp -d)
START=$(date +%s)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its output and exit status
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
    echo $? >"$WORK/$name.rc"
    echo $(($(date +%s) - t0)) >"$WORK/$name.seconds"
    echo "$name: exit $(cat "$WORK/$name.rc") after $(cat "$WORK/$name.seconds") s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$WORK/gpus.txt" 2>&1 || true
step pytest_gpu 240 python -m pytest -m gpu -q -p no:cacheprovider -rA tests
step throughput 120 python benchmarks/gpu_throughput.py --runs 2 --steps 200 --out "$WORK/throughput.json"
step ddp 60 python benchmarks/ddp_gpu.py --steps 30 --out "$WORK/ddp.json"
step fsdp_refusal 30 python benchmarks/ddp_gpu.py --fsdp-refusal --out "$WORK/fsdp_refusal.json"

python - "$WORK" "$RESULTS" "$START" <<'EOF'
import json, sys, time
from pathlib import Path

import torch

work, results, start = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])


def read(name, default=None):
    path = work / name
    return path.read_text() if path.exists() else default


report = {
    "gpus": (read("gpus.txt") or "").strip().splitlines(),
    "torch": torch.__version__,
    "cuda_devices": torch.cuda.device_count(),
    "seconds": int(time.time()) - start,
    "steps": {},
}
for name in ("pytest_gpu", "throughput", "ddp", "fsdp_refusal"):
    entry = {"exit": int(read(f"{name}.rc", "-1")), "seconds": int(read(f"{name}.seconds", "0"))}
    figures = read(f"{name}.json")
    if figures:
        entry["result"] = json.loads(figures)
    log = read(f"{name}.log", "")
    entry["log_tail"] = log[-4000:] if name == "pytest_gpu" or entry["exit"] != 0 else log[-600:]
    report["steps"][name] = entry
results.write_text(json.dumps(report, indent=2))
print(f"wrote {results} ({report['seconds']} s)")
EOF
