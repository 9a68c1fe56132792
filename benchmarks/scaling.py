"""Training throughput of `VAE` on 1 vs 2 processes (DDP, gloo) on this machine's CPU, and on a GPU if present.

MNIST MLP 784-400-20 (Bernoulli, Adam 1e-3) with a global batch of 128: one process takes 128 per step,
two DDP processes take 64 each. Each run trains `--steps` steps after `--warmup` steps that are not
timed; the contenders alternate run by run and medians are compared.

    python benchmarks/scaling.py --runs 3 --steps 200

On a CPU with few cores the two processes share the cores that one process would use with intra-op
threads, so the figure measures DDP's overhead (gradient all-reduce, process duplication) rather than a
speed-up; on a multi-GPU machine run with `--accelerator gpu --devices 2`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from lightning_vae import VAE
from lightning_vae.data import MNISTDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder

DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


class _StepTimer(Callback):
    """Times steps after the warm-up on rank zero and writes samples/s to a file (survives ddp_spawn)."""

    def __init__(self, warmup: int, out: str, global_batch: int) -> None:
        self.warmup, self.out, self.global_batch = warmup, out, global_batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_rank == 0:
            steps = trainer.global_step - self.warmup
            Path(self.out).write_text(json.dumps(steps * self.global_batch / (time.perf_counter() - self.start)))


def run(dm: MNISTDataModule, devices: int, steps: int, warmup: int, accelerator: str) -> float:
    seed_everything(0, verbose=False)
    model = VAE(MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,)), likelihood="bernoulli")
    dm.batch_size = 128 // devices
    with tempfile.TemporaryDirectory() as root:
        out = os.path.join(root, "result.json")
        trainer = Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy="ddp_spawn" if devices > 1 else "auto",
            max_steps=warmup + steps,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
            default_root_dir=root,
            callbacks=[_StepTimer(warmup, out, 128)],
        )
        trainer.fit(model, datamodule=dm)
        return float(json.loads(Path(out).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=2, help="processes of the multi-process contender")
    parser.add_argument("--data-dir", default=os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(DEFAULT_MNIST)))
    args = parser.parse_args()

    dm = MNISTDataModule(args.data_dir, batch_size=128, binarize="dynamic")
    results: dict[int, list[float]] = {1: [], args.devices: []}
    for i in range(args.runs):
        order = (1, args.devices) if i % 2 == 0 else (args.devices, 1)
        for devices in order:
            results[devices].append(run(dm, devices, args.steps, args.warmup, args.accelerator))
            print(f"run {i + 1}, {devices} process(es): {results[devices][-1]:8.0f} samples/s", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"threads per process: {torch.get_num_threads()} (1 process); device: {args.accelerator}")
    for k, v in med.items():
        print(f"median {k} process(es): {v:8.0f} samples/s  runs {[round(x) for x in results[k]]}")
    print(f"ratio {args.devices} / 1 (medians): {med[args.devices] / med[1]:.3f}")


if __name__ == "__main__":
    main()
