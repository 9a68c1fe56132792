"""Large no-grad evaluations of a diagonal-Gaussian mixture's log-density: matrix products against the broadcast form.

``DiagonalGaussianMixture.component_log_prob`` without autograd, for ``N`` samples against ``K`` components of
dimension ``D`` (``N x K x D >= 2^24``: the importance-weighted NLL of a VampPrior model evaluates chunks of 10,000
samples against K = 500), computes the squared distances by two float64 matrix products. This script times both forms
side by side (alternating, median of ``--rounds``) and reports their largest relative error against a float64
reference (both return float32: their errors are float32 rounding of densities as large as -1e5).

    python benchmarks/mixture_eval.py --samples 10000 --components 500 --dim 40 --rounds 7 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightning_vae.distributions import DiagonalGaussianMixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    k, d = args.components, args.dim
    # Parameters in the range of a trained VampPrior's pseudo-posteriors: means ~N(0, 4), log-variances in [-6, 0.5].
    mixture = DiagonalGaussianMixture(
        torch.randn(k, generator=g), 2.0 * torch.randn(k, d, generator=g), -6.0 + 6.5 * torch.rand(k, d, generator=g)
    )
    z = 2.0 * torch.randn(args.samples, d, generator=g)

    def broadcast() -> torch.Tensor:
        r = (z.unsqueeze(-2) - mixture.locs) * mixture._inv_std
        return -0.5 * (r.square().sum(-1) + mixture._log_norm)

    def products() -> torch.Tensor:
        out = mixture._expanded_log_prob(z)
        assert out is not None
        return out

    contenders = {"broadcast": broadcast, "matrix products": products}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.no_grad():
        reference = -0.5 * (
            ((z.double().unsqueeze(-2) - mixture.locs.double()) * mixture._inv_std.double()).square().sum(-1)
            + mixture._log_norm.double()
        )
        errors = {
            name: ((fn().double() - reference).abs() / reference.abs().clamp_min(1.0)).max().item()
            for name, fn in contenders.items()
        }
        for r in range(args.rounds):
            for name in contenders if r % 2 == 0 else reversed(list(contenders)):
                t0 = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["broadcast"])
    print(f"N = {args.samples}, K = {k}, D = {d}, {args.rounds} rounds, torch threads {args.threads}")
    print("| form | median seconds | speed-up | largest relative error against float64 |")
    print("| --- | ---: | ---: | ---: |")
    for name in contenders:
        med = statistics.median(times[name])
        print(f"| {name} | {med:.3f} | {base / med:.1f}x | {errors[name]:.1e} |")


if __name__ == "__main__":
    main()
