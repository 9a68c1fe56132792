#!/usr/bin/env bash
# GPU check of lightning-vae: unattended, from the repository root, on a fresh one-GPU machine with torch, lightning,
# torchmetrics, onnx, scipy and hypothesis (no hydra-core, omegaconf or jsonargparse; the package need not be
# installed: the repository goes on PYTHONPATH). Each step has its own time limit, 450 s in all (under 8 minutes):
#   1. pytest_gpu (190 s): the GPU tests, pytest -m gpu over the whole test tree (the Hydra tests skip without it);
#   2. throughput (120 s): samples/s of VAE vs the same loss in a minimal LightningModule vs a hand-written loop, in
#      32-true, bf16-mixed and 16-mixed (benchmarks/gpu_throughput.py; figures written after each precision);
#   3. sync (60 s): torch.cuda.set_sync_debug_mode("error") over the quiet training steps of the default, mixture-prior
#      and VampPrior VAEs with the main callbacks (benchmarks/gpu_sync_check.py);
#   4. ddp (60 s): two processes against one, same weights and validation values (one GPU each with two GPUs, else
#      both on one GPU over gloo; benchmarks/ddp_gpu.py);
#   5. fsdp_refusal (20 s): with two GPUs, FSDP over two processes is refused.
# Results: gpu_check_results.json (exit status, seconds, figures and the end of each log) and logs/ in $OUT when it
# is set, else in the folder given as the argument, else in benchmarks/gpu_check_out/. Exit status 1 when a step
# failed.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run DIR   # rehearse every step on the CPU, tiny sizes, without hydra-core,
#                                                # omegaconf and jsonargparse (benchmarks/rehearsal/); not a measurement
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

DRY=0
FOLDER=""
for arg in "$@"; do
    case "$arg" in
    --dry-run) DRY=1 ;;
    -h | --help)
        sed -n '2,22p' "$0"
        exit 0
        ;;
    *) FOLDER="$arg" ;;
    esac
done
RESULTS="${OUT:-${FOLDER:-$ROOT/benchmarks/gpu_check_out}}"
mkdir -p "$RESULTS/logs"
RESULTS="$(cd "$RESULTS" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
START=$(date +%s)

if [ "$DRY" = 1 ]; then # the mechanics only: a CPU shared with other work may be slow, so the limits are wide
    export PYTHONPATH="$ROOT/benchmarks/rehearsal:$PYTHONPATH"
    ACCELERATOR=cpu
    THROUGHPUT=(--models mlp --runs 1 --steps 2 --warmup 1 --n-data 512)
    SYNC=(--steps 14)
    DDP=(--steps 2)
    LIMITS=(600 600 600 600 120)
else
    ACCELERATOR=gpu
    THROUGHPUT=(--runs 2 --steps 150 --warmup 20)
    SYNC=(--steps 80)
    DDP=(--steps 20)
    LIMITS=(190 120 60 60 20)
fi

step() { # step NAME SECONDS COMMAND...: run with a time limit, keep its output, exit status and duration
    local name=$1 limit=$2
    shift 2
    local t0
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$RESULTS/logs/$name.log" 2>&1
    echo $? >"$RESULTS/logs/$name.rc"
    echo $(($(date +%s) - t0)) >"$RESULTS/logs/$name.seconds"
    echo "$name: exit $(cat "$RESULTS/logs/$name.rc") after $(cat "$RESULTS/logs/$name.seconds") s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$RESULTS/logs/gpus.txt" 2>&1 || true
# -p no:hydra_pytest: hydra-core's pytest plugin, where it is installed (the rehearsal hides hydra itself).
step pytest_gpu "${LIMITS[0]}" python -m pytest -m gpu -q -rA -p no:cacheprovider -p no:hydra_pytest tests
step throughput "${LIMITS[1]}" python benchmarks/gpu_throughput.py --accelerator "$ACCELERATOR" "${THROUGHPUT[@]}" \
    --out "$RESULTS/logs/throughput.json"
step sync "${LIMITS[2]}" python benchmarks/gpu_sync_check.py --accelerator "$ACCELERATOR" "${SYNC[@]}" --out "$RESULTS/logs/sync.json"
step ddp "${LIMITS[3]}" python benchmarks/ddp_gpu.py --accelerator "$ACCELERATOR" "${DDP[@]}" --out "$RESULTS/logs/ddp.json"
step fsdp_refusal "${LIMITS[4]}" python benchmarks/ddp_gpu.py --accelerator "$ACCELERATOR" --fsdp-refusal \
    --out "$RESULTS/logs/fsdp_refusal.json"

python - "$RESULTS" "$START" "$DRY" <<'EOF'
import json
import sys
import time
from pathlib import Path

import torch

results, start, dry = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
logs = results / "logs"


def read(name: str, default: str | None = None) -> str | None:
    path = logs / name
    return path.read_text() if path.exists() else default


report = {
    "dry_run": dry,
    "gpus": (read("gpus.txt") or "").strip().splitlines(),
    "torch": torch.__version__,
    "cuda_devices": torch.cuda.device_count(),
    "seconds": int(time.time()) - start,
    "steps": {},
}
for name in ("pytest_gpu", "throughput", "sync", "ddp", "fsdp_refusal"):
    entry = {"exit": int(read(f"{name}.rc", "-1")), "seconds": int(read(f"{name}.seconds", "0"))}
    figures = read(f"{name}.json")
    if figures:
        entry["result"] = json.loads(figures)
    log = read(f"{name}.log", "") or ""
    entry["log_tail"] = log[-4000:] if name == "pytest_gpu" or entry["exit"] != 0 else log[-600:]
    report["steps"][name] = entry
(results / "gpu_check_results.json").write_text(json.dumps(report, indent=2))
failed = [name for name, entry in report["steps"].items() if entry["exit"] != 0]
print(f"wrote {results / 'gpu_check_results.json'} ({report['seconds']} s); failed: {failed or 'none'}")
sys.exit(1 if failed else 0)
EOF
