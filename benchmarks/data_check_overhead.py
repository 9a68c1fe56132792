"""What checking every CPU batch's range costs a training step: the common step with and without the data check.

On the CPU ``VAE`` tests every training batch against the likelihood's range (one fused ``aminmax`` and two host
reads, free on the CPU) instead of the first 10 batches and then every 25th (the accelerators' schedule). Both
contenders are the same ``VAE`` object's ``training_step`` + backward on a step whose values reach no logger
(the common step), MNIST-sized MLP 784-400-20 with separate heads as in ``step_overhead.py``:

- ``every batch``: the CPU behaviour, the range tested at this step;
- ``schedule``: the data check on the accelerator schedule at a batch that is not due (no check at all).

The figure is the median over ``rounds * steps`` back-to-back pairs (one step of each, order alternating) of the
per-step difference in thread CPU time, and the median over rounds of ``steps`` steps of each (process CPU time).

    python benchmarks/data_check_overhead.py --batch-sizes 2 128 --rounds 9 --steps 200 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_overhead import SplitEncoder, _NoLogTrainer, make_decoder, paired_differences  # noqa: E402

from lightning_vae import VAE  # noqa: E402


def measure(batch: int, rounds: int, steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    vae = VAE(SplitEncoder(), make_decoder(), latent_dim=20, data_shape=(1, 28, 28))
    vae._trainer = _NoLogTrainer(False)  # type: ignore[assignment]
    x = torch.rand(batch, 1, 28, 28).round()
    vae.training_step(x, 5)["loss"].backward()  # the first step: the full data check, the divergence scale

    def step(every_batch: bool) -> Any:
        def run() -> Any:
            vae.data_check.every_cpu_batch = every_batch
            vae.data_check.seen = 11  # accelerator schedule: batch 11 is not due
            return vae.training_step(x, 5)["loss"]

        return run

    contenders = {"every batch": step(True), "schedule": step(False)}
    for fn in contenders.values():  # warm-up
        for _ in range(20):
            fn().backward()
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name in list(contenders) if r % 2 == 0 else list(reversed(contenders)):
            c0 = time.process_time()
            for _ in range(steps):
                contenders[name]().backward()
            cpu[name].append((time.process_time() - c0) / steps * 1e6)
    pairs = paired_differences(contenders, ("every batch", "schedule"), "every batch", rounds * steps)
    return {
        "batch": batch,
        "step_us": statistics.median(cpu["schedule"]),
        "rounds_us": statistics.median(e - s for e, s in zip(cpu["every batch"], cpu["schedule"])),
        "paired_us": statistics.median(pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 128])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {args.threads}, {args.rounds} rounds of {args.steps} steps per contender")
    print("| batch | step + backward, no check (CPU µs) | every-batch check: median of rounds | median of pairs |")
    print("| ---: | ---: | ---: | ---: |")
    for batch in args.batch_sizes:
        r = measure(batch, args.rounds, args.steps)
        print(f"| {batch} | {r['step_us']:.0f} | {r['rounds_us']:+.1f} µs | {r['paired_us']:+.1f} µs |", flush=True)


if __name__ == "__main__":
    main()
