"""What subnormal floats cost on this CPU, and what ``torch.set_flush_denormal(True)`` gives back.

A float32 below 1.18e-38 is subnormal; x86 CPUs compute with such values through a slow path (tens to hundreds of
times slower per operation). Late in a long training run they appear in activations, gradients and Adam's moments
(an M2 model on MNIST trained ~3x slower per step at epoch 77 than with them flushed). ``torch.set_flush_denormal``
makes the CPU read and write them as zero; it sets the calling thread's mode, and PyTorch's intra-op worker threads
take the mode of the thread that starts them, so it must be set before the first tensor operation of the process.

Each measurement runs in a fresh process (the mode is set first there), configurations rotated, median of the rounds:

- ``matmul``: the product of a ``(1100, 784)`` float32 matrix (an M2 training step's first layer: 100 labelled rows
  plus 100 unlabelled rows for each of 10 classes) with a ``(784, 500)`` weight, the input all subnormal or all
  normal, with and without flushing;
- ``m2_steps`` (with ``--m2-checkpoint PATH``, a ``last.ckpt`` of ``benchmarks/m2_mnist.py``): training steps of that
  M2 model (Adam's state from the checkpoint) on real MNIST batches, with and without flushing.

Usage::

    python benchmarks/denormals.py --rounds 5 --threads 1 2
    python benchmarks/denormals.py --rounds 5 --threads 1 --m2-checkpoint benchmarks/runs/m2/n3000_seed2/last.ckpt
    python benchmarks/denormals.py --quick        # one round, small sizes (CI)

Results: ``benchmarks/denormals_results.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "denormals_results.json"
#: The largest float32 subnormal's neighbourhood: the bit pattern 5,000,000 read as float32 (about 7.0e-39).
SUBNORMAL_BITS = 5_000_000


def _child(config: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process; the flush mode is set before any tensor operation."""
    import torch

    torch.set_num_threads(int(config["threads"]))
    torch.set_flush_denormal(bool(config["flush"]))
    if config["what"] == "matmul":
        rows, cols, out = config["shape"]
        weight = torch.randn(cols, out)
        if config["input"] == "subnormal":
            x = torch.full((rows, cols), SUBNORMAL_BITS, dtype=torch.int32).view(torch.float32)
        else:
            x = torch.rand(rows, cols)
        torch.mm(x, weight)  # warm-up
        times = []
        for _ in range(int(config["repeats"])):
            start = time.perf_counter()
            product = torch.mm(x, weight)
            times.append(time.perf_counter() - start)
        return {"seconds": min(times), "product_is_zero": bool((product == 0).all())}
    return _m2_steps(config)


def _m2_steps(config: dict[str, Any]) -> dict[str, Any]:
    import importlib.util

    import torch

    from lightning_vae.data import Batch, SemiSupervisedMNISTDataModule

    spec = importlib.util.spec_from_file_location("m2_mnist", ROOT / "benchmarks" / "m2_mnist.py")
    assert spec is not None and spec.loader is not None
    m2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m2)
    try:
        checkpoint = torch.load(config["checkpoint"], map_location="cpu", weights_only=True)
        n_labelled = int(checkpoint["datamodule_hyper_parameters"]["n_labelled"])
    except Exception as err:  # a truncated, foreign or hostile file: say which, in one line
        raise SystemExit(
            f"{config['checkpoint']} is not a readable last.ckpt of benchmarks/m2_mnist.py "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})"
        ) from None
    vae = m2.build(n_labelled, 3e-4)
    vae.load_state_dict(checkpoint["state_dict"])
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-4)
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    dm = SemiSupervisedMNISTDataModule(config["data_dir"], n_labelled=n_labelled, seed=0)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    times = []
    for step in range(int(config["repeats"]) + 1):
        x, y = next(batches)
        start = time.perf_counter()
        terms = vae.objective.training_terms(vae.model, Batch(x, y), False, False)
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
        if step:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "n_labelled": n_labelled, "epoch": int(checkpoint["epoch"]) + 1}


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh Python process and return what it measured."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"the {config['what']} measurement failed in its process: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    shape = (110, 784, 50) if args.quick else (1100, 784, 500)
    configs: list[dict[str, Any]] = []
    for threads in args.threads:
        for kind in ("subnormal", "normal"):
            for flush in (False, True):
                configs.append(
                    {"what": "matmul", "threads": threads, "input": kind, "flush": flush, "shape": shape,
                     "repeats": 2 if args.quick else 5}
                )  # fmt: skip
        if args.m2_checkpoint:
            for flush in (False, True):
                configs.append(
                    {"what": "m2_steps", "threads": threads, "flush": flush, "checkpoint": str(args.m2_checkpoint),
                     "data_dir": args.data_dir, "repeats": args.m2_steps}
                )  # fmt: skip
    samples: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(configs))}
    rounds = 1 if args.quick else args.rounds
    for r in range(rounds):
        order = list(range(len(configs)))
        order = order[r % len(order) :] + order[: r % len(order)]  # rotate which configuration goes first
        for i in order:
            samples[i].append(measure(configs[i]))
            print(f"round {r + 1}/{rounds}: {configs[i]['what']} {configs[i]} -> {samples[i][-1]}", flush=True)
    rows = []
    for i, config in enumerate(configs):
        seconds = [s["seconds"] for s in samples[i]]
        row = {k: v for k, v in config.items() if k not in ("repeats", "data_dir")}
        row.update({"median_seconds": statistics.median(seconds), "seconds": seconds})
        row.update({k: v for k, v in samples[i][-1].items() if k != "seconds"})
        rows.append(row)

    def find(**keys: Any) -> dict[str, Any] | None:
        return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)

    ratios = {}
    for threads in args.threads:
        slow, fast = (
            find(what="matmul", threads=threads, input="subnormal", flush=False),
            find(what="matmul", threads=threads, input="subnormal", flush=True),
        )
        normal = find(what="matmul", threads=threads, input="normal", flush=False)
        assert slow and fast and normal
        ratios[f"matmul_subnormal_vs_normal_{threads}t"] = slow["median_seconds"] / normal["median_seconds"]
        ratios[f"matmul_subnormal_unflushed_vs_flushed_{threads}t"] = slow["median_seconds"] / fast["median_seconds"]
        steps_slow, steps_fast = (
            find(what="m2_steps", threads=threads, flush=False),
            find(what="m2_steps", threads=threads, flush=True),
        )
        if steps_slow and steps_fast:
            ratios[f"m2_step_unflushed_vs_flushed_{threads}t"] = (
                steps_slow["median_seconds"] / steps_fast["median_seconds"]
            )
    results = {
        "what": "time of one operation or training step with subnormal floats, flushed to zero or not",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
        "rounds": rounds,
        "ratios": ratios,
        "rows": rows,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--m2-checkpoint", type=Path, default=None, help="a last.ckpt of benchmarks/m2_mnist.py")
    parser.add_argument("--m2-steps", type=int, default=6, help="timed M2 training steps per measurement")
    parser.add_argument(
        "--data-dir", default=os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))
    )
    parser.add_argument("--output", default=str(OUTPUT))
    parser.add_argument("--quick", action="store_true", help="one round of small products (CI)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.m2_checkpoint is not None and not args.m2_checkpoint.is_file():
        parser.error(f"--m2-checkpoint: no file at {args.m2_checkpoint}")
    if args.rounds < 1 or args.m2_steps < 1 or min(args.threads) < 1:
        parser.error("--rounds, --m2-steps and --threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return None
    try:
        return run(args)
    except RuntimeError as err:
        print(f"denormals.py: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
