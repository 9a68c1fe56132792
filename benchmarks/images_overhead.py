"""Cost of the TensorBoard views: training throughput with the image/projector/dashboard callbacks on vs off.

The main job's model (convolutional VAE, 10 latent dimensions, Bernoulli) on the 32x32 shapes data,
batch 128, with validation and a TensorBoardLogger in both contenders. "On" adds, at their default
settings (every validation epoch): ReconstructionLogger, PriorSampleLogger, LatentTraversalLogger,
LatentEmbeddingLogger and TensorBoardDashboard. Contenders alternate run by run; medians of the runs
are compared, because single runs on a shared machine vary.

Reported per contender:
- throughput: training examples per second of wall-clock time over the whole fit (training, validation and
  the views' work at the end of each validation epoch), and per second of this process's CPU time (less
  sensitive to other processes on a shared machine);
- the median time of one training step (on_train_batch_start -> on_train_batch_end), which the views never touch;
- for "on", the wall-clock time spent inside the views' hooks, per epoch and as a share of the same run's fit
  time: a paired measurement, taken under the same machine load as the training it is compared with, so it
  is the reliable figure on a shared machine where whole runs vary by tens of percent.

    python benchmarks/images_overhead.py --runs 3 --epochs 2 --n_train 5000

A smaller epoch than the main job's 20,000 examples makes the relative overhead larger (the views cost the
same per epoch), so the figure is an upper bound for the default setting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_vae import VAE
from lightning_vae.callbacks import (
    LatentEmbeddingLogger,
    LatentTraversalLogger,
    PriorSampleLogger,
    ReconstructionLogger,
    TensorBoardDashboard,
)
from lightning_vae.data import FACTOR_NAMES, ShapesDataModule
from lightning_vae.nets import ConvDecoder, ConvEncoder


class StepTimer(Callback):
    """Median wall time of a training step (forward, backward, optimizer), hook to hook."""

    def __init__(self) -> None:
        self.steps: list[float] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.steps.append(time.perf_counter() - self._t)


def timed(callback: Callback, totals: dict[str, float]) -> Callback:
    """Wrap every hook of ``callback`` to add its wall time to ``totals[name]``."""
    name = type(callback).__name__
    for hook in (
        "setup",
        "on_train_start",
        "on_train_end",
        "on_validation_batch_start",
        "on_validation_batch_end",
        "on_validation_epoch_start",
        "on_validation_epoch_end",
    ):
        original = getattr(callback, hook)

        def wrapper(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

        setattr(callback, hook, wrapper)
    return callback


def views() -> list[Callback]:
    return [
        ReconstructionLogger(),
        PriorSampleLogger(),
        LatentTraversalLogger(),
        LatentEmbeddingLogger(metadata_header=list(FACTOR_NAMES)),
        TensorBoardDashboard(),
    ]


def run(with_views: bool, data: ShapesDataModule, epochs: int) -> dict[str, Any]:
    seed_everything(0, verbose=False)
    model = VAE(ConvEncoder(1, 32, latent_dim=10), ConvDecoder(10, 1, 32), likelihood="bernoulli")
    timer, totals = StepTimer(), {}
    callbacks: list[Callback] = [timer] + ([timed(cb, totals) for cb in views()] if with_views else [])
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator="cpu",
            max_epochs=epochs,
            logger=TensorBoardLogger(root, name="bench"),
            callbacks=callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            log_every_n_steps=20,
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.fit(model, data)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    examples = trainer.global_step * data.hparams.batch_size
    return {
        "throughput": examples / seconds,
        "cpu_throughput": examples / cpu_seconds,
        "step_ms": 1000 * statistics.median(timer.steps),
        "views_ms_per_epoch": {k: 1000 * v / epochs for k, v in totals.items()},
        "views_share": sum(totals.values()) / seconds,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n_train", type=int, default=5000)
    parser.add_argument("--n_val", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = ShapesDataModule(image_size=32, n_train=args.n_train, n_val=args.n_val, batch_size=128)
    data.setup("fit")
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for i in range(args.runs):
        for with_views in (False, True) if i % 2 == 0 else (True, False):
            result = run(with_views, data, args.epochs)
            results[with_views].append(result)
            print(
                f"run {i} views={'on ' if with_views else 'off'}: {result['throughput']:.1f} ex/s, "
                f"{result['cpu_throughput']:.1f} ex/CPU-s, step {result['step_ms']:.1f} ms, "
                f"fit {result['seconds']:.1f} s"
                + (f", views {100 * result['views_share']:.2f}% of it" if with_views else ""),
                flush=True,
            )
    off = statistics.median(r["throughput"] for r in results[False])
    on = statistics.median(r["throughput"] for r in results[True])
    cpu_off = statistics.median(r["cpu_throughput"] for r in results[False])
    cpu_on = statistics.median(r["cpu_throughput"] for r in results[True])
    step_off = statistics.median(r["step_ms"] for r in results[False])
    step_on = statistics.median(r["step_ms"] for r in results[True])
    names = sorted({k for r in results[True] for k in r["views_ms_per_epoch"]})
    per_view = {n: statistics.median(r["views_ms_per_epoch"].get(n, 0.0) for r in results[True]) for n in names}
    epoch_s = statistics.median(r["seconds"] for r in results[False]) / args.epochs
    print(f"\nmedian throughput: off {off:.1f} ex/s, on {on:.1f} ex/s, overhead {100 * (off - on) / off:+.2f}%")
    cpu_overhead = 100 * (cpu_off - cpu_on) / cpu_off
    print(
        f"per CPU second of this process: off {cpu_off:.1f} ex/s, on {cpu_on:.1f} ex/s, overhead {cpu_overhead:+.2f}%"
    )
    step_change = 100 * (step_on - step_off) / step_off
    print(f"median training step: off {step_off:.2f} ms, on {step_on:.2f} ms ({step_change:+.2f}%)")
    total = sum(per_view.values())
    share = statistics.median(r["views_share"] for r in results[True])
    print(f"views' own time: {total:.1f} ms per epoch, {100 * share:.2f}% of the fit time of the same run (medians)")
    print(f"(epoch of the 'off' runs: {epoch_s:.1f} s median)")
    for name, ms in per_view.items():
        print(f"  {name}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
