"""Training throughput of `VAE` against a hand-written PyTorch loop on the same model, loss and data.

MNIST (dynamically binarised, 55,000 training images), MLP 784-400-20, Bernoulli likelihood,
Adam (lr 1e-3), batch 128, one epoch per run. The two contenders alternate run by run and the
medians of the runs are compared, because single runs on a shared machine vary by about ±25%.

    python benchmarks/throughput.py --runs 3

One untimed round of every contender comes first (``--warmup``): the first training run in a
process pays one-time costs (lazy imports, creating the TensorBoard event file) that are not part
of the per-epoch throughput.

`VAE` runs under a plain `Trainer` with its default TensorBoard logging on (logged every 50 steps,
no host sync per step); progress bar, checkpointing and validation are off in both contenders, so
the figure is the cost of the training step. A third contender runs the hand-written loss inside a
minimal LightningModule, which separates Lightning's own per-step cost from this package's.
Throughput is reported per wall-clock second and per
CPU second of the process; on a machine shared with other work the CPU-time figure (with
`--threads 1`) is the steadier of the two.
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
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn

from lightning_vae import VAE
from lightning_vae.data import MNISTDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder

DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


class _EpochTimer(Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


class _HandWrittenModule(LightningModule):
    """The hand-written network and loss inside a minimal LightningModule: Lightning's own cost, without ours."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
        self.decoder = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))

    def training_step(self, batch, batch_idx):
        x = batch[0]
        loc, log_var = self.encoder(x).chunk(2, dim=-1)
        z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
        recon = F.binary_cross_entropy_with_logits(self.decoder(z), x.flatten(1), reduction="none").sum(-1)
        kl = 0.5 * (torch.exp(log_var) + loc.pow(2) - 1.0 - log_var).sum(-1)
        return (recon + kl).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def run_vae(dm: MNISTDataModule, max_steps: int, minimal: bool = False) -> tuple[float, float]:
    """Samples per wall-clock second and per CPU second of one epoch under the Lightning Trainer."""
    seed_everything(0, verbose=False)
    model: LightningModule = (
        _HandWrittenModule()
        if minimal
        else VAE(MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,)), likelihood="bernoulli")
    )
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
    samples = trainer.global_step * dm.batch_size
    return samples / timer.seconds, samples / timer.cpu_seconds


def run_minimal(dm: MNISTDataModule, max_steps: int) -> tuple[float, float]:
    """The hand-written loss in a minimal LightningModule (Lightning's fixed cost alone)."""
    return run_vae(dm, max_steps, minimal=True)


def run_plain(dm: MNISTDataModule, max_steps: int) -> tuple[float, float]:
    """Samples per second of one epoch of a hand-written loop: same network, loss, optimiser and loader."""
    seed_everything(0, verbose=False)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
    decoder = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    steps = 0
    start, cpu_start = time.perf_counter(), time.process_time()
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
    samples = steps * dm.batch_size
    return samples / (time.perf_counter() - start), samples / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (alternating)")
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on steps per run (-1: one full epoch)")
    parser.add_argument("--data-dir", default=os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(DEFAULT_MNIST)))
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds of every contender before the runs")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dm = MNISTDataModule(args.data_dir, batch_size=128, binarize="dynamic")
    dm.setup("fit")
    contenders = [("VAE", run_vae), ("plain", run_plain), ("lightning", run_minimal)]
    wall: dict[str, list[float]] = {name: [] for name, _ in contenders}
    cpu: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for _ in range(args.warmup):  # one-time costs of the process (lazy imports, first event file), not per epoch
        for _name, fn in contenders:
            fn(dm, args.max_steps)
    for i in range(args.runs):
        for name, fn in contenders[i % 3 :] + contenders[: i % 3]:  # rotate the order run by run
            w, c = fn(dm, args.max_steps)
            wall[name].append(w)
            cpu[name].append(c)
            print(f"run {i + 1} {name:9s}: {w:8.0f} samples/s wall, {c:8.0f} samples per CPU second", flush=True)
    print(f"torch threads: {torch.get_num_threads()}")
    for label, table in (("wall-clock", wall), ("CPU-time", cpu)):
        med = {k: statistics.median(v) for k, v in table.items()}
        print(f"{label}: medians " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()) + " samples/s")
        for name in ("VAE", "lightning"):
            paired = statistics.median(v / p for v, p in zip(table[name], table["plain"]))
            print(
                f"  {name} / plain: ratio of medians {med[name] / med['plain']:.3f}, "
                f"median of paired ratios {paired:.3f}"
            )
        paired = statistics.median(v / p for v, p in zip(table["VAE"], table["lightning"]))
        print(
            f"  VAE / lightning (our cost alone): ratio of medians {med['VAE'] / med['lightning']:.3f}, "
            f"median of paired ratios {paired:.3f}"
        )


if __name__ == "__main__":
    main()
