"""Per-step cost of the fault-handling paths, measured directly against the step they run in.

Model: MNIST MLP 784-400-20 (Bernoulli, Adam lr 1e-3), batch 128, random binary batches on the CPU. One
"step" is ``training_step`` + backward + ``optimizer.step`` outside the Trainer. Contenders, interleaved in
rotated order within each round, each timed over ``--steps`` steps; the medians over ``--rounds`` rounds:

- ``plain``: the step with the non-finite guard switched off (its ``observe`` replaced by a no-op);
- ``guard``: the step as it ships (``on_nonfinite="raise"``: the loss read at every step on a CPU);
- ``guard-deferred``: the accelerator mode (device values kept, read on "logging" steps every 50);
- ``guard-skip``: ``on_nonfinite="skip"`` (the loss read at every step and the gradients' norms checked);
- ``exact-resume``: the step plus ``ExactResume.on_train_batch_start`` (seeding torch, NumPy, random).

Overheads are reported as microseconds per step and as a fraction of the ``plain`` step.

    python benchmarks/fault_overhead.py --rounds 7 --steps 100 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from lightning_vae import VAE
from lightning_vae.callbacks import ExactResume
from lightning_vae.nets import MLPDecoder, MLPEncoder


def make(policy: str = "raise") -> tuple[VAE, torch.optim.Optimizer]:
    torch.manual_seed(0)
    vae = VAE(
        MLPEncoder((1, 28, 28), 20, hidden_sizes=(400,)),
        MLPDecoder(20, (1, 28, 28), hidden_sizes=(400,)),
        on_nonfinite=policy,
    )
    # Outside a Trainer every step would log; a non-logging training step is the one measured.
    vae.log = vae.log_dict = lambda *a, **k: None  # type: ignore[method-assign]
    return vae, torch.optim.Adam(vae.parameters(), lr=1e-3)


def run(name: str, vae: VAE, opt: torch.optim.Optimizer, batches: list[torch.Tensor]) -> float:
    seeder = ExactResume(seed=0)
    trainer = SimpleNamespace(current_epoch=0, global_rank=0)
    start = time.perf_counter()
    for i, x in enumerate(batches):
        if name == "exact-resume":
            seeder.on_train_batch_start(trainer, vae, x, i)  # type: ignore[arg-type]
        out = vae.training_step(x, i)
        assert out is not None
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if name == "guard-skip":
            vae.on_before_optimizer_step(opt)
        opt.step()
        if name == "guard-deferred" and i % 50 == 49:
            vae.guard.flush(vae)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [torch.bernoulli(torch.rand(128, 1, 28, 28)) for _ in range(args.steps)]
    names = ["plain", "guard", "guard-deferred", "guard-skip", "exact-resume"]
    setups = {}
    for name in names:
        vae, opt = make("skip" if name == "guard-skip" else "raise")
        if name in ("plain", "exact-resume"):
            vae.guard.observe = lambda *a, **k: False  # type: ignore[method-assign]
        if name == "guard-deferred":
            vae.guard.deferred = True
        setups[name] = (vae, opt)
    for name in names:  # warm-up
        run(name, *setups[name], batches[:10])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(run(name, *setups[name], batches))
    base = statistics.median(times["plain"])
    print(f"threads={args.threads} rounds={args.rounds} steps={args.steps}")
    print(f"{'contender':16s} {'ms/step':>8s} {'overhead us':>12s} {'fraction':>9s}")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:16s} {med * 1e3:8.3f} {(med - base) * 1e6:12.1f} {(med - base) / base:9.2%}")
    # The hooks alone, timed in a loop of their own (far less noisy than the difference of two step times).
    vae, opt = make()
    out = vae.compute_terms(batches[0])[0]
    seeder, trainer = ExactResume(seed=0), SimpleNamespace(current_epoch=0, global_rank=0)
    calls = {
        "guard.observe (raise, CPU)": lambda i: vae.guard.observe(vae, batches[0], out, step=i, batch_idx=i, epoch=0),
        "ExactResume seeding": lambda i: seeder.on_train_batch_start(trainer, vae, batches[0], i),  # type: ignore
    }
    print(f"\n{'hook alone':28s} {'us/call':>8s} {'of plain step':>14s}")
    for label, call in calls.items():
        samples = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for i in range(1000):
                call(i)
            samples.append((time.perf_counter() - start) / 1000)
        med = statistics.median(samples)
        print(f"{label:28s} {med * 1e6:8.1f} {med / base:14.2%}")


if __name__ == "__main__":
    main()
