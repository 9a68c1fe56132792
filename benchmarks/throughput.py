"""Training throughput of `VAE` against a hand-written PyTorch loop on the same model, loss and data.

MNIST (dynamically binarised, 55,000 training images), MLP 784-400-20, Bernoulli likelihood,
Adam (lr 1e-3), batch 128, one epoch per run. The two contenders alternate run by run and the
medians of the runs are compared, because single runs on a shared machine vary by about ±25%.

    python benchmarks/throughput.py --runs 3
    python benchmarks/throughput.py --runs 7 --processes 5 --threads 1   # the whole measurement in 5 processes

A process's memory layout moves every contender's speed by a few per cent for the whole process (seen as ratios
that differ by ±0.03 between processes of the same code), which more runs inside one process do not average out:
``--processes`` repeats the measurement in fresh processes and reports the median of their ratios.

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

The default setting is the one the package's step cost is judged by: every contender uses the same encoder with
separate loc / log-variance heads and the same decoder (`--heads split`), the data are a plain `TensorDataset` of
statically binarised MNIST images in a `DataLoader` (`--loader tensor`), 2 torch threads. `--heads joint` (one
head of 40 outputs, the package's `MLPEncoder`) and `--loader datamodule` (`MNISTDataModule`, dynamic
binarisation) give the earlier setting. Next to the ratios the script prints the package's cost per step in
microseconds, ``(1 / VAE rate - 1 / minimal-module rate) * batch``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.data import MNISTDataModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_overhead import SplitEncoder, make_decoder  # noqa: E402  (the networks of the step-cost benchmark)

DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


class _EpochTimer(Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


class _JointEncoder(nn.Module):
    """784-400 ReLU, one head of 40 outputs split into loc and log-variance (what `MLPEncoder` computes)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_var = self.net(x).chunk(2, dim=-1)
        return loc, log_var


HEADS = "split"  # set by main(): the encoder every contender uses


def networks() -> tuple[nn.Module, nn.Module]:
    """The encoder (separate or joint heads) and the decoder 20-400-784 every contender trains."""
    encoder = SplitEncoder() if HEADS == "split" else _JointEncoder()
    return encoder, make_decoder()


def hand_loss(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    loc, log_var = encoder(x)
    z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
    recon = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").flatten(1).sum(-1)
    kl = 0.5 * (torch.exp(log_var) + loc.pow(2) - 1.0 - log_var).sum(-1)
    return (recon + kl).mean()


class _HandWrittenModule(LightningModule):
    """The hand-written network and loss inside a minimal LightningModule: Lightning's own cost, without ours."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = networks()

    def training_step(self, batch, batch_idx):
        return hand_loss(self.encoder, self.decoder, batch[0])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def run_vae(dm: Any, max_steps: int, minimal: bool = False) -> tuple[float, float]:
    """Samples per wall-clock second and per CPU second of one epoch under the Lightning Trainer."""
    seed_everything(0, verbose=False)
    model: LightningModule = (
        _HandWrittenModule()
        if minimal
        else VAE(*networks(), likelihood="bernoulli", latent_dim=20, data_shape=(1, 28, 28))
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


def run_minimal(dm: Any, max_steps: int) -> tuple[float, float]:
    """The hand-written loss in a minimal LightningModule (Lightning's fixed cost alone)."""
    return run_vae(dm, max_steps, minimal=True)


def run_plain(dm: Any, max_steps: int) -> tuple[float, float]:
    """Samples per second of one epoch of a hand-written loop: same network, loss, optimiser and loader."""
    seed_everything(0, verbose=False)
    encoder, decoder = networks()
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    steps = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in dm.train_dataloader():
        loss = hand_loss(encoder, decoder, batch[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps == max_steps:
            break
    samples = steps * dm.batch_size
    return samples / (time.perf_counter() - start), samples / (time.process_time() - cpu_start)


class _TensorLoader:
    """Statically binarised training images of a set-up MNISTDataModule in a plain TensorDataset and DataLoader."""

    def __init__(self, mnist: MNISTDataModule, batch_size: int = 128) -> None:
        assert mnist.train_set is not None
        images = mnist.train_set.tensors[0].float()
        generator = torch.Generator().manual_seed(0)
        self.dataset = TensorDataset(torch.bernoulli(images.clamp(0, 1), generator=generator))
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (alternating)")
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on steps per run (-1: one full epoch)")
    parser.add_argument("--data-dir", default=os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(DEFAULT_MNIST)))
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds of every contender before the runs")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--heads", choices=("split", "joint"), default="split", help="encoder heads of every contender")
    parser.add_argument("--loader", choices=("tensor", "datamodule"), default="tensor", help="where batches come from")
    parser.add_argument(
        "--processes", type=int, default=1, help="repeat the whole measurement in this many fresh processes"
    )
    parser.add_argument("--json", default=None, help="write this process's medians and ratios here (JSON)")
    args = parser.parse_args()
    if args.processes > 1:
        across_processes(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    global HEADS
    HEADS = args.heads

    mnist = MNISTDataModule(args.data_dir, batch_size=128, binarize="dynamic")
    mnist.setup("fit")
    dm: Any = mnist if args.loader == "datamodule" else _TensorLoader(mnist)
    print(f"setting: {args.heads} heads, {args.loader} loader, batch {dm.batch_size}")
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
    summary: dict[str, Any] = {"threads": torch.get_num_threads()}
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
        overhead = statistics.median(
            (1 / v - 1 / m) * dm.batch_size * 1e6 for v, m in zip(table["VAE"], table["lightning"])
        )
        print(
            f"  VAE / lightning (our cost alone): ratio of medians {med['VAE'] / med['lightning']:.3f}, "
            f"median of paired ratios {paired:.3f}; package cost per step {overhead:.0f} µs (median of paired runs)"
        )
        summary[label] = {"medians": med, "vae_over_lightning": med["VAE"] / med["lightning"], "paired": paired}
    if args.json:
        Path(args.json).write_text(json.dumps(summary))


def across_processes(args: argparse.Namespace) -> None:
    """The whole measurement in ``args.processes`` fresh processes, one after another, and the median of their
    ratios: a process's memory layout shifts every contender's speed by a few per cent for the whole process,
    which more runs inside one process do not average out."""
    ratios: dict[str, list[tuple[float, float]]] = {"wall-clock": [], "CPU-time": []}
    for i in range(args.processes):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "result.json"
            command = [sys.executable, __file__, "--runs", str(args.runs), "--max-steps", str(args.max_steps)]
            command += ["--data-dir", args.data_dir, "--warmup", str(args.warmup), "--threads", str(args.threads)]
            command += ["--heads", args.heads, "--loader", args.loader, "--json", str(out)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = json.loads(out.read_text())
        for label in ratios:
            ratios[label].append((result[label]["vae_over_lightning"], result[label]["paired"]))
        cpu = ratios["CPU-time"][-1]
        print(f"process {i + 1}: VAE / lightning {cpu[0]:.3f} (ratio of medians), {cpu[1]:.3f} (paired)", flush=True)
    for label, values in ratios.items():
        medians = statistics.median(v[0] for v in values)
        paired = statistics.median(v[1] for v in values)
        print(
            f"{label}, {args.processes} processes x {args.runs} runs: VAE / lightning, median over processes of the "
            f"ratio of medians {medians:.3f} (each: {', '.join(f'{v[0]:.3f}' for v in values)}), "
            f"of the median of paired ratios {paired:.3f}"
        )


if __name__ == "__main__":
    main()
