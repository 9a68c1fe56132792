"""Draw the KL of every latent dimension over training for the collapse benchmark's runs (docs/collapse_kl.png).

A development tool, not part of the package: it needs matplotlib, which lightning-vae does not
depend on (``pip install matplotlib`` into a development environment first). The values are the
``PosteriorCollapseMonitor`` histories that ``benchmarks/collapse.py`` stores in its results JSON
(the same numbers as the monitor's ``collapse/kl_per_dim_heatmap`` image in TensorBoard), drawn
side by side on one colour scale so the runs can be compared at a glance.

Usage::

    python scripts/plot_collapse.py                  # benchmarks/collapse_results.json -> docs/collapse_kl.png
    python scripts/plot_collapse.py --results my.json --out my.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TITLES = {
    "plain": "(a) plain ELBO",
    "free_bits": "(b) free bits",
    "cyclical": "(c) cyclical annealing",
    "aggressive": "(d) aggressive training",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "collapse_results.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "collapse_kl.png")
    parser.add_argument("--floor", type=float, default=1e-3, help="KL (nats) drawn as the darkest colour")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    results = json.loads(args.results.read_text())
    runs = [r for r in results["runs"] if r.get("kl_per_dim_history")]
    if not runs:
        raise SystemExit(f"{args.results} holds no `kl_per_dim_history`; rerun benchmarks/collapse.py")
    vmax = max(max(max(check) for check in r["kl_per_dim_history"]) for r in runs)
    norm = LogNorm(vmin=args.floor, vmax=max(vmax, 10 * args.floor))
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 4.6), sharey=True, constrained_layout=True)
    axes = list(axes) if len(runs) > 1 else [axes]
    image = None
    for ax, r in zip(axes, runs):
        history = r["kl_per_dim_history"]  # (checks, D)
        dims = len(history[0])
        grid = [[max(history[t][d], args.floor) for t in range(len(history))] for d in range(dims)]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest",
                          extent=(0.5, len(history) + 0.5, dims - 0.5, -0.5))
        ax.set_title(
            f"{TITLES.get(r['run'], r['run'])}\nAU {r['active_units']}/{dims}, I(x;z) {r['mutual_info']:.2f}, "
            f"KL {r['kl']:.2f}\nIW-NLL {r['nll_iw']:.2f} nats",
            fontsize=9,
        )
        ax.set_xlabel("epoch (validation check)")
        ax.set_xticks(range(1, len(history) + 1, max(1, math.ceil(len(history) / 8))))
    axes[0].set_ylabel("latent dimension")
    fig.colorbar(image, ax=axes, label="KL per dimension (nats, log scale)", shrink=0.9)
    fig.suptitle("Posterior collapse: KL of each latent dimension over training (binarised MNIST, PixelCNN decoder)",
                 fontsize=10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
