"""Training throughput of `VAE` with `KLAnnealing` + `FreeBits` on against the same run without them.

MNIST (dynamically binarised), MLP 784-400-20, Bernoulli likelihood, Adam (lr 1e-3), batch 128.
Each run trains a fixed number of optimizer steps (200 by default) and is timed from step 20 to
its end (the first steps pay for start-up). "on" adds `KLAnnealing("cyclical")` and
`FreeBits(0.5, mode="dim")` with λ decaying linearly to 0.1, so the free-bits clamp is active at
every step; "off" is the plain `VAE` (β = 1, no free bits). The contenders alternate run by run
(off-on, then on-off, ...) and the medians of the runs are compared; the median of the per-pair
ratios is reported too. Throughput is given per wall-clock second and per CPU second of the
process (`time.process_time`); on a machine shared with other jobs the CPU clock is far less
disturbed by them (use `--threads 1` there so that idle worker threads do not count). The time
spent inside the two callbacks' per-step hooks is also measured directly and given as a fraction
of the step time, and the loss + backward of one batch is timed with and without free bits in an
interleaved loop (the clamp runs inside the loss); their sum accounts for the overhead with far
less noise than the throughput ratio.

    python benchmarks/annealing_overhead.py --runs 7 --steps 200 [--threads 1]

MNIST is read from $LIGHTNING_VAE_MNIST_DIR (default: ../shared/data/mnist beside the checkout).
Both contenders run under the same `Trainer` settings: default TensorBoard logger (every 50 steps),
no progress bar, no checkpointing, no validation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from lightning_vae import VAE
from lightning_vae.callbacks import FreeBits, KLAnnealing
from lightning_vae.data import MNISTDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder

DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
WARMUP_STEPS = 20


class _HookClock:
    """Wraps the per-step hooks of callbacks on the instances and sums the wall time spent in them."""

    HOOKS = ("on_train_batch_start", "on_train_batch_end")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.active = False

    def wrap(self, callback: Callback) -> Callback:
        for name in self.HOOKS:
            hook = getattr(callback, name)

            def timed(*args, _hook=hook, **kwargs):
                start, cpu_start = time.perf_counter(), time.process_time()
                result = _hook(*args, **kwargs)
                if self.active:
                    self.seconds += time.perf_counter() - start
                    self.cpu_seconds += time.process_time() - cpu_start
                return result

            setattr(callback, name, timed)
        return callback


class _StepTimer(Callback):
    """Wall time from the start of step ``WARMUP_STEPS`` to the end of the last step."""

    def __init__(self, clock: _HookClock) -> None:
        self.start: float | None = None
        self.end = 0.0
        self.cpu_start = self.cpu_end = 0.0
        self.steps = 0
        self.clock = clock

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == WARMUP_STEPS and self.start is None:
            self.start, self.cpu_start = time.perf_counter(), time.process_time()
            self.clock.active = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.start is not None:
            self.end, self.cpu_end = time.perf_counter(), time.process_time()
            self.steps += 1


def run(dm: MNISTDataModule, steps: int, annealed: bool) -> dict[str, float]:
    """Samples per second of one run (per wall second and per CPU second of the process), and the wall and CPU
    seconds per step spent in the annealing callbacks' hooks."""
    seed_everything(0, verbose=False)
    model = VAE(MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,)), likelihood="bernoulli")
    clock = _HookClock()
    timer = _StepTimer(clock)
    callbacks: list[Callback] = [timer]
    if annealed:
        # The timer's on_train_batch_start runs first, so the hooks of the first timed step are counted.
        callbacks = [
            timer,
            clock.wrap(KLAnnealing("cyclical", length=steps, n_cycles=4, ratio=0.5)),
            clock.wrap(FreeBits(0.5, mode="dim", schedule="linear", end=0.1, length=steps)),
        ]
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator="cpu",
            max_steps=steps,
            max_epochs=-1,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=root,
            callbacks=callbacks,
        )
        trainer.fit(model, train_dataloaders=dm.train_dataloader())
    assert timer.start is not None and timer.steps == steps - WARMUP_STEPS
    if annealed:
        assert model.free_bits > 0  # the clamp was active to the end
    samples = timer.steps * dm.batch_size
    return {
        "wall": samples / (timer.end - timer.start),
        "cpu": samples / (timer.cpu_end - timer.cpu_start),
        "hook_wall": clock.seconds / timer.steps,
        "hook_cpu": clock.cpu_seconds / timer.steps,
    }


def objective_cost(dm: MNISTDataModule, reps: int) -> tuple[float, float]:
    """Median seconds of loss + backward on one batch without and with free bits (λ = 0.5, "dim"), interleaved."""
    seed_everything(0, verbose=False)
    model = VAE(MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,)), likelihood="bernoulli")
    x = next(iter(dm.train_dataloader()))[0]
    times: dict[float, list[float]] = {0.0: [], 0.5: []}
    for i in range(2 * reps):
        model.free_bits = 0.5 if i % 2 else 0.0
        start = time.perf_counter()
        model.compute_terms(x)[0].loss.backward()
        times[model.free_bits].append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[0.0]), statistics.median(times[0.5])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each contender (>= 3)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--data-dir", default=os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(DEFAULT_MNIST)))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.runs < 3 or args.steps <= WARMUP_STEPS:
        parser.error(f"need --runs >= 3 and --steps > {WARMUP_STEPS}")
    if args.threads:
        torch.set_num_threads(args.threads)

    dm = MNISTDataModule(args.data_dir, batch_size=128, binarize="dynamic")
    dm.setup("fit")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.runs} runs x {args.steps} steps")
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for i in range(args.runs):
        order = (False, True) if i % 2 == 0 else (True, False)
        for annealed in order:
            results[annealed].append(run(dm, args.steps, annealed))
        off_run, on_run = results[False][-1], results[True][-1]
        print(
            f"run {i + 1}: off {off_run['wall']:8.1f} samples/s ({off_run['cpu']:7.1f} per CPU s)   "
            f"on {on_run['wall']:8.1f} samples/s ({on_run['cpu']:7.1f} per CPU s)"
        )
    for clock in ("wall", "cpu"):
        off = statistics.median(r[clock] for r in results[False])
        on = statistics.median(r[clock] for r in results[True])
        pairs = statistics.median(a[clock] / b[clock] for a, b in zip(results[True], results[False]))
        print(
            f"{clock:>4} clock: median off {off:.1f}, on {on:.1f} samples/s; ratio on/off {on / off:.4f} (medians), "
            f"{pairs:.4f} (median of paired ratios); overhead {100 * (1 - on / off):+.2f}% / {100 * (1 - pairs):+.2f}%"
        )
        hooks = statistics.median(r[f"hook_{clock}"] for r in results[True])
        share = 100 * hooks * on / dm.batch_size
        print(f"           time in the callbacks' hooks: {1e6 * hooks:.1f} us per step = {share:.2f}% of a step")
    plain, clamped = objective_cost(dm, reps=200)
    step = dm.batch_size / statistics.median(r["wall"] for r in results[False])
    print(
        f"loss + backward on one batch: {1e3 * plain:.3f} ms without free bits, {1e3 * clamped:.3f} ms with "
        f"(+{1e6 * (clamped - plain):.1f} us = {100 * (clamped - plain) / step:+.2f}% of a step)"
    )


if __name__ == "__main__":
    main()
