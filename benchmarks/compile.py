"""Effect of `VAE(compile=True)` (torch.compile of encoder and decoder) on training throughput.

Two models: the MNIST MLP 784-400-20 (batch 128) and a conv VAE on 64x64 shapes (batch 64). Each run
trains `--warmup` untimed steps (compilation happens there) and then `--steps` timed steps; eager and
compiled runs alternate and medians are compared.

    python benchmarks/compile.py --runs 3 --steps 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from lightning.pytorch import Callback, Trainer, seed_everything

from lightning_vae import VAE
from lightning_vae.data import MNISTDataModule, ShapesDataModule
from lightning_vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


class _StepTimer(Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def run(kind: str, dm, compile: bool, steps: int, warmup: int, accelerator: str) -> float:
    seed_everything(0, verbose=False)
    if kind == "mlp":
        model = VAE(MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,)), compile=compile)
    else:
        model = VAE(ConvEncoder(1, 64, 10), ConvDecoder(10, 1, 64), compile=compile)
    timer = _StepTimer(warmup)
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator=accelerator,
            max_steps=warmup + steps,
            max_epochs=-1,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
            default_root_dir=root,
            callbacks=[timer],
        )
        trainer.fit(model, datamodule=dm)
    return steps * dm.batch_size / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--models", default="mlp,conv64")
    parser.add_argument("--data-dir", default=os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(DEFAULT_MNIST)))
    args = parser.parse_args()
    data = {
        "mlp": MNISTDataModule(args.data_dir, batch_size=128),
        "conv64": ShapesDataModule(image_size=64, n_train=8192, n_val=64, batch_size=64),
    }
    for kind in args.models.split(","):
        results: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.runs):
            for flag in (False, True) if i % 2 == 0 else (True, False):
                results[flag].append(run(kind, data[kind], flag, args.steps, args.warmup, args.accelerator))
                print(f"{kind} run {i + 1} compile={flag}: {results[flag][-1]:8.0f} samples/s", flush=True)
        eager, compiled = statistics.median(results[False]), statistics.median(results[True])
        print(f"{kind}: median eager {eager:.0f}, compiled {compiled:.0f} samples/s, ratio {compiled / eager:.3f}")


if __name__ == "__main__":
    main()
