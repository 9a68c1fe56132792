"""What each objective costs per training step, side by side with the ELBO.

Each objective trains the same 64 px network of ``benchmarks/disentanglement.py`` (Locatello et al.'s, latent 10) on
the same fixed batches through a Lightning ``Trainer`` (so FactorVAE's manual optimization with its two optimizers
is what is timed), for ``--steps`` steps after ``--warmup`` untimed ones; a callback reads the process's CPU time
(``time.process_time``) at each batch's start and end, with one torch thread (``--threads``): on a shared machine
the wall time of a step measures the other processes as much as the step. The objectives take turns within each of
``--rounds`` rounds, their order rotated by one place each round (so no objective always runs first or last in a
process whose allocator and caches the earlier ones warmed); the reported figure per objective is the median over
rounds of (its median step CPU time / the ELBO's in the same round).

Usage::

    python benchmarks/objective_cost.py                     # prints a table and writes --results (JSON)
    python benchmarks/objective_cost.py --steps 5 --rounds 1 --batch-size 8   # seconds (the test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from disentanglement import LATENT, NAMES, make_objective  # noqa: E402

from lightning_vae import VAE  # noqa: E402
from lightning_vae.data.shapes import render_shapes, sample_factors  # noqa: E402
from lightning_vae.nets import ConvDecoder, ConvEncoder  # noqa: E402


class StepTimes(Callback):
    """CPU time of each training batch (forward, backward and the optimizer steps)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._start = time.process_time()

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.times.append(time.process_time() - self._start)


def step_time(name: str, images: torch.Tensor, batch_size: int, steps: int, warmup: int) -> float:
    """The median seconds per training step of objective ``name``."""
    seed_everything(0, verbose=False)
    vae = VAE(ConvEncoder(1, 64, latent_dim=LATENT), ConvDecoder(LATENT, 1, 64), objective=make_objective(name, 6.0))
    loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=False, drop_last=True)
    timer = StepTimes()
    trainer = Trainer(
        accelerator="cpu",
        max_steps=(steps + warmup) * (2 if vae.objective.manual_optimization else 1),  # counts each optimizer
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        log_every_n_steps=10**6,
    )
    trainer.fit(vae, train_dataloaders=loader)
    return statistics.median(timer.times[warmup:])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--objectives", default=",".join(NAMES))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "objective_cost_results.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in args.objectives.split(",") if n]
    if names[0] != "vae":
        names = ["vae", *[n for n in names if n != "vae"]]  # the ELBO is the reference of every round
    n = args.batch_size * (args.steps + args.warmup)
    images = render_shapes(sample_factors(n, seed=0), 64).float()
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotated: each objective takes each place in turn
        rounds.append({name: step_time(name, images, args.batch_size, args.steps, args.warmup) for name in order})
    table = {
        name: {
            "median_step_cpu_ms": 1e3 * statistics.median(r[name] for r in rounds),
            "ratio_to_elbo": statistics.median(r[name] / r["vae"] for r in rounds),
        }
        for name in names
    }
    results = {
        "settings": vars(args),
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "rounds": rounds,
        "per_objective": table,
    }
    Path(args.results).write_text(json.dumps(results, indent=1))
    for name, row in table.items():
        print(f"{name:12s} {row['median_step_cpu_ms']:8.1f} CPU ms/step  x{row['ratio_to_elbo']:.2f} of the ELBO")
    return results


if __name__ == "__main__":
    main()
