"""The package's own cost per training step: ``VAE``'s loss + backward against the same loss written by hand.

MNIST-sized MLP 784-400-20 with separate loc / log-variance heads, Bernoulli likelihood, standard normal prior,
one sample. Both contenders share the same encoder and decoder objects; each round runs ``--steps`` forward +
backward passes of one contender, then of the other (the order alternates round by round), outside the Trainer:

- ``hand``: the loss written by hand (reparameterisation, BCE with logits, closed-form KL), what a minimal
  LightningModule's ``training_step`` computes;
- ``step``: ``VAE.training_step`` on a step whose values reach no logger (every step but one in
  ``log_every_n_steps``, 50 by default), then backward.

The figure is the median over rounds of the per-step difference (``step`` - ``hand``) in microseconds, in CPU
time of the process (``time.process_time``; with one torch thread this is the steadiest clock on a shared
machine) and in wall-clock time; and the median over ``rounds * steps`` back-to-back pairs (one step of each
contender, order alternating) of the per-step difference in thread CPU time, the figure least moved by other
processes' bursts.

    python benchmarks/step_overhead.py --batch-sizes 2 128 --rounds 9 --steps 200 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_vae import VAE


class SplitEncoder(nn.Module):
    """784-400 ReLU body with separate loc and log-variance heads of 20."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU())
        self.loc = nn.Linear(400, 20)
        self.log_var = nn.Linear(400, 20)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.loc(h), self.log_var(h)


def make_decoder() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784), nn.Unflatten(-1, (1, 28, 28)))


def hand_loss(encoder: nn.Module, decoder: nn.Module, x: Tensor) -> Tensor:
    loc, log_var = encoder(x)
    z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
    recon = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum((1, 2, 3))
    kl = 0.5 * (loc.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)
    return (recon + kl).mean()


class _NoLogTrainer:
    """The two trainer attributes ``training_step`` reads, for a step whose values reach no logger."""

    def __init__(self, logs: bool) -> None:
        self.global_step, self.current_epoch, self.num_training_batches = 1, 0, 1000
        self._logger_connector = type("C", (), {"should_update_logs": logs})()


def paired_differences(contenders: dict[str, Any], order: tuple[str, str], minuend: str, n: int) -> list[float]:
    """``n`` back-to-back pairs of one step + backward of each contender (``order`` first, then reversed, in turn):
    the thread CPU time of ``minuend`` minus the other's, in microseconds, per pair."""
    (subtrahend,) = set(order) - {minuend}
    pairs: list[float] = []
    for i in range(n):
        times = {}
        for name in order if i % 2 == 0 else order[::-1]:
            t0 = time.thread_time_ns()
            contenders[name]().backward()
            times[name] = time.thread_time_ns() - t0
        pairs.append((times[minuend] - times[subtrahend]) / 1e3)
    return pairs


def measure(batch: int, rounds: int, steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    encoder, decoder = SplitEncoder(), make_decoder()
    vae = VAE(encoder, decoder, latent_dim=20, data_shape=(1, 28, 28))
    x = torch.rand(batch, 1, 28, 28).round()

    def step(logs: bool) -> Any:
        vae._trainer = _NoLogTrainer(logs)  # type: ignore[assignment]
        return lambda: vae.training_step(x, 5)["loss"]  # type: ignore[index]

    contenders = {"hand": lambda: hand_loss(encoder, decoder, x), "step": step(False)}
    for fn in contenders.values():  # warm-up
        for _ in range(20):
            fn().backward()
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            fn = contenders[name]
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                fn().backward()
            cpu[name].append((time.process_time() - c0) / steps * 1e6)
            wall[name].append((time.perf_counter() - w0) / steps * 1e6)
    # Paired per step: one step of each contender back to back (order alternating), thread CPU time of each;
    # the median of the pairs' differences is robust to the bursts of a shared machine.
    pairs = paired_differences(contenders, ("hand", "step"), "step", rounds * steps)
    cpu_diff = [s - h for s, h in zip(cpu["step"], cpu["hand"])]
    wall_diff = [s - h for s, h in zip(wall["step"], wall["hand"])]
    return {
        "batch": batch,
        "hand_cpu_us": statistics.median(cpu["hand"]),
        "step_cpu_us": statistics.median(cpu["step"]),
        "overhead_cpu_us": statistics.median(cpu_diff),
        "overhead_wall_us": statistics.median(wall_diff),
        "rounds_cpu_us": [round(d) for d in cpu_diff],
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
    print(
        "| batch | hand-written loss + backward (CPU µs) | VAE.training_step + backward (CPU µs) "
        "| overhead, CPU µs (median of rounds) | overhead, wall µs | overhead, median of per-step pairs (thread "
        "CPU µs) | per-round CPU overheads |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for batch in args.batch_sizes:
        r = measure(batch, args.rounds, args.steps)
        print(
            f"| {batch} | {r['hand_cpu_us']:.0f} | {r['step_cpu_us']:.0f} | {r['overhead_cpu_us']:.0f} "
            f"| {r['overhead_wall_us']:.0f} | {r['paired_us']:.0f} "
            f"| {', '.join(map(str, r['rounds_cpu_us']))} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
