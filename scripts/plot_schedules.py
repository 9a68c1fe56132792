"""Draw every annealing schedule of ``lightning_vae.functional.schedules`` into one figure (docs/schedules.png).

A development tool, not part of the package: it needs matplotlib, which lightning-vae does not
depend on (``pip install matplotlib`` into a development environment first). The values are those
of the callbacks themselves (:class:`~lightning_vae.functional.schedules.Schedule`), so the figure
shows exactly what ``KLAnnealing``, ``CapacityAnnealing`` and ``FreeBits`` set at each step.

Usage::

    python scripts/plot_schedules.py                 # writes docs/schedules.png
    python scripts/plot_schedules.py --out my.png --steps 20000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_vae.functional.schedules import Schedule

ROOT = Path(__file__).resolve().parents[1]


def panels(steps: int) -> list[tuple[str, str, list[tuple[str, Schedule]], str]]:
    """``(title, callback call, [(label, schedule)], y label)`` for each panel."""
    t = steps
    return [
        ("Linear warm-up (Bowman et al. 2016)", f'KLAnnealing("linear", length={t // 2})',
         [("β", Schedule("linear", length=t // 2))], "β"),
        ("Logistic (Bowman et al. 2016)", f'KLAnnealing("logistic", length={t // 2})',
         [("β = 1 / (1 + exp(-k (t - t0)))", Schedule("logistic", length=t // 2))], "β"),
        ("Cosine", f'KLAnnealing("cosine", length={t // 2})',
         [("β", Schedule("cosine", length=t // 2))], "β"),
        ("β-VAE: constant", 'KLAnnealing("constant", end=4.0)',
         [("β", Schedule("constant", end=4.0))], "β"),
        ("Cyclical (Fu et al. 2019): M = 4, R = 0.5", f'KLAnnealing("cyclical", length={t}, n_cycles=4)',
         [(s, Schedule("cyclical", length=t, n_cycles=4, shape=s))  # type: ignore[arg-type]
          for s in ("linear", "sigmoid", "cosine")], "β"),
        ("Monotonic (Fu et al. 2019): M = 1, R = 0.5", f'KLAnnealing("cyclical", length={t}, n_cycles=1)',
         [("β", Schedule("cyclical", length=t, n_cycles=1))], "β"),
        ("Capacity (Burgess et al. 2018): γ·|KL − C|", f"CapacityAnnealing(c_max=25.0, length={int(0.8 * t)})",
         [("C (nats)", Schedule("linear", start=0.0, end=25.0, length=int(0.8 * t)))], "C (nats)"),
        ("Free bits λ decay (Kingma et al. 2016)", f'FreeBits(0.5, schedule="linear", end=0.0, length={t // 2})',
         [("linear", Schedule("linear", start=0.5, end=0.0, length=t // 2)),
          ("cosine", Schedule("cosine", start=0.5, end=0.0, length=t // 2))], "λ (nats)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "schedules.png")
    parser.add_argument("--steps", type=int, default=10_000, help="training steps on the x axis")
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(args.steps + 1))
    specs = panels(args.steps)
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.6), sharex=True)
    colors = ("#1f77b4", "#d62728", "#2ca02c")
    for ax, (title, call, curves, ylabel) in zip(axes.flat, specs):
        for (label, schedule), color in zip(curves, colors):
            ax.plot(steps, [schedule(s) for s in steps], color=color, lw=1.8, label=label)
        ax.set_title(title, fontsize=10.5, fontweight="bold", pad=17)
        ax.text(0.5, 1.015, call, transform=ax.transAxes, ha="center", va="bottom", fontsize=8.2, family="monospace",
                color="#444444")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        high = max(max(s.high for _, s in curves), 1e-9)
        if len(curves) > 1:
            ax.set_ylim(-0.05 * high, 1.4 * high)
            title = "cycle_shape" if "Cyclical" in title else "schedule"
            ax.legend(fontsize=7.8, loc="upper center", ncol=len(curves), handlelength=1.5, columnspacing=1.0,
                      title=title, title_fontsize=7.8)
            ax.set_yticks([v for v in ax.get_yticks() if -1e-9 <= v <= high * (1 + 1e-9)])
        else:
            ax.set_ylim(-0.05 * high, 1.12 * high)
    for ax in axes[1]:
        ax.set_xlabel("training step")
    fig.suptitle("lightning-vae annealing schedules (values set by the callbacks at each optimizer step)", fontsize=13)
    fig.tight_layout(h_pad=2.2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
