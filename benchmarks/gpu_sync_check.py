"""No device synchronisation in the quiet training steps of a GPU run: `torch.cuda.set_sync_debug_mode("error")`.

The CPU tests count host reads by patching torch (`tests/scale/test_host_syncs.py`); only a GPU can show that
nothing else waits for the device. This script trains the default VAE (standard normal prior: the fast path), a
mixture-prior VAE and a VampPrior VAE with the main callbacks (KL annealing, free bits, target rate, the collapse
monitor), and turns CUDA's sync debug mode to "error" for every quiet step: from the first callback's
`on_train_batch_start` to the last callback's `on_train_batch_end` (the training step, backward, optimizer step and
the callbacks' batch hooks) of each step that neither logs (`log_every_n_steps`, the epoch's first and last batch)
nor checks its data (the module's first 10 batches, then every 50th). Any synchronising CUDA call there raises,
and the script reports where.

    python benchmarks/gpu_sync_check.py --steps 80 --out sync.json
    python benchmarks/gpu_sync_check.py --accelerator cpu --steps 14   # rehearse: no sync debug mode on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.callbacks import FreeBits, KLAnnealing, PosteriorCollapseMonitor, TargetRate
from lightning_vae.nets import MLPDecoder, MLPEncoder
from lightning_vae.utilities import logs_this_step

SHAPE, LATENT, BATCH, LOG_EVERY = (1, 28, 28), 16, 64, 25

MODELS: dict[str, Callable[[], VAE]] = {
    "default": lambda: VAE(MLPEncoder(SHAPE, LATENT, (256,)), MLPDecoder(LATENT, SHAPE, (256,))),
    "mixture": lambda: VAE(
        MLPEncoder(SHAPE, LATENT, (256,)), MLPDecoder(LATENT, SHAPE, (256,)), prior="mixture", prior_components=10
    ),
    "vamp": lambda: VAE(
        MLPEncoder(SHAPE, LATENT, (256,)), MLPDecoder(LATENT, SHAPE, (256,)), prior="vamp", prior_components=50
    ),
}


class QuietSteps:
    """Which steps are quiet, and the sync debug mode around them (only where CUDA has one: ``enforce``)."""

    def __init__(self, enforce: bool) -> None:
        self.enforce = enforce
        self.checked: list[int] = []
        self._on = False

    @staticmethod
    def quiet(trainer: Trainer, pl_module: LightningModule, batch_idx: int) -> bool:
        last = trainer.num_training_batches - 1 if isinstance(trainer.num_training_batches, int) else -1
        check = getattr(pl_module, "data_check", None)  # DataCheck: the first `first` batches, then every `every`-th
        due = check is not None and (check.seen < check.first or check.seen % check.every == 0)
        return not (logs_this_step(trainer) or batch_idx in (0, last) or due)

    def begin(self, batch_idx: int) -> None:
        self.checked.append(batch_idx)
        if self.enforce:
            torch.cuda.set_sync_debug_mode("error")
        self._on = True

    def end(self) -> None:
        if self._on and self.enforce:
            torch.cuda.set_sync_debug_mode("default")
        self._on = False


class _Begin(Callback):
    """First in the callback list."""

    def __init__(self, steps: QuietSteps) -> None:
        self.steps = steps

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if QuietSteps.quiet(trainer, pl_module, batch_idx):
            self.steps.begin(batch_idx)


class _End(Callback):
    """Last in the callback list."""

    def __init__(self, steps: QuietSteps) -> None:
        self.steps = steps

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.steps.end()


def check(name: str, steps: int, accelerator: str) -> dict[str, Any]:
    seed_everything(0, verbose=False)
    enforce = accelerator == "gpu"
    quiet = QuietSteps(enforce)
    data = torch.bernoulli(torch.rand(steps * BATCH, *SHAPE, generator=torch.Generator().manual_seed(0)))
    loader = DataLoader(TensorDataset(data), batch_size=BATCH, pin_memory=enforce)
    val = DataLoader(TensorDataset(data[: 2 * BATCH]), batch_size=BATCH, pin_memory=enforce)
    main = [
        KLAnnealing(schedule="cyclical", length=steps, n_cycles=2),
        FreeBits(0.05, mode="total"),  # "total": a mixture prior's KL does not factorise over dimensions
        TargetRate(target=5.0, update_every=10 * steps),  # its β update reads the KL by design: not in this run
        PosteriorCollapseMonitor(log_images=False),
    ]
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator=accelerator,
            devices=1,
            max_epochs=1,
            limit_val_batches=2,
            log_every_n_steps=LOG_EVERY,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=CSVLogger(root),
            callbacks=[_Begin(quiet), *main, _End(quiet)],
        )
        try:
            trainer.fit(MODELS[name](), train_dataloaders=loader, val_dataloaders=val)
            error = None
        except Exception as err:  # a synchronising CUDA call in error mode (RuntimeError), or any other failure
            error = "".join(traceback.format_exception(err))[-3000:]
        finally:
            quiet.end()
    return {
        "quiet_steps_checked": len(quiet.checked),
        "sync_debug_mode": "error" if enforce else "not available without CUDA (rehearsal: steps counted only)",
        "error": error,
        "ok": error is None and len(quiet.checked) > 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=80, help="training steps per model (one epoch)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"], help="cpu: rehearse the mechanics")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("gpu_sync_check.py needs a CUDA device (--accelerator cpu rehearses it on the CPU)")
    results = {name: check(name, args.steps, args.accelerator) for name in args.models}
    for name, result in results.items():
        print(f"{name}: {'ok' if result['ok'] else 'FAILED'} ({result['quiet_steps_checked']} quiet steps)", flush=True)
        if result["error"]:
            print(result["error"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    sys.exit(0 if all(r["ok"] for r in results.values()) else 1)


if __name__ == "__main__":
    main()
