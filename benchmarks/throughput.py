"""Training throughput of `VAE` against a hand-written PyTorch loop on the same model, loss and data.

MNIST (dynamically binarised, 55,000 training images), MLP 784-400-20, Bernoulli likelihood,
Adam (lr 1e-3), batch 128, one epoch per run. The two contenders alternate run by run and the
medians of the runs are compared, because single runs on a shared machine vary by about ±25%.

    python benchmarks/throughput.py --runs 3

`VAE` runs under a plain `Trainer` with its default TensorBoard logging on (logged every 50 steps,
no host sync per step); progress bar, checkpointing and validation are off in both contenders, so
the figure is the cost of the training step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer, seed_everything
from torch import nn

from lightning_vae import VAE
from lightning_vae.data import MNISTDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder

DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


class _EpochTimer(Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def run_vae(dm: MNISTDataModule, max_steps: int) -> float:
    """Samples per second of one epoch of `VAE` under the Lightning Trainer."""
    seed_everything(0, verbose=False)
    model = VAE(MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,)), likelihood="bernoulli")
    timer = _EpochTimer()
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator="cpu",
            max_epochs=1,
            max_steps=max_steps,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=root,
            callbacks=[timer],
        )
        trainer.fit(model, train_dataloaders=dm.train_dataloader())
    return trainer.global_step * dm.batch_size / timer.seconds


def run_plain(dm: MNISTDataModule, max_steps: int) -> float:
    """Samples per second of one epoch of a hand-written loop: same network, loss, optimiser and loader."""
    seed_everything(0, verbose=False)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
    decoder = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    steps = 0
    start = time.perf_counter()
    for x, _ in dm.train_dataloader():
        loc, log_var = encoder(x).chunk(2, dim=-1)
        z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
        logits = decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(-1)
        kl = 0.5 * (torch.exp(log_var) + loc.pow(2) - 1.0 - log_var).sum(-1)
        loss = (recon + kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps == max_steps:
            break
    return steps * dm.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (alternating)")
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on steps per run (-1: one full epoch)")
    parser.add_argument("--data-dir", default=os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(DEFAULT_MNIST)))
    args = parser.parse_args()

    dm = MNISTDataModule(args.data_dir, batch_size=128, binarize="dynamic")
    dm.setup("fit")
    results: dict[str, list[float]] = {"VAE": [], "plain": []}
    for i in range(args.runs):
        for name, fn in (
            (("VAE", run_vae), ("plain", run_plain)) if i % 2 == 0 else (("plain", run_plain), ("VAE", run_vae))
        ):
            results[name].append(fn(dm, args.max_steps))
            print(f"run {i + 1} {name:5s}: {results[name][-1]:8.0f} samples/s", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"median VAE   : {med['VAE']:8.0f} samples/s  runs {[round(v) for v in results['VAE']]}")
    print(f"median plain : {med['plain']:8.0f} samples/s  runs {[round(v) for v in results['plain']]}")
    print(f"ratio VAE / plain (medians): {med['VAE'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
