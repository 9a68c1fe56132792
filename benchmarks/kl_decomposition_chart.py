"""The KL's three parts over training, as `KLDecompositionMonitor` logs them: the ELBO against β-TCVAE (shapes).

Trains the same convolutional network (latent 10) twice on the 32 px shapes data, once with the ELBO and once with
β-TCVAE (β = ``--beta``, minibatch-stratified sampling), each with a ``KLDecompositionMonitor`` that sums the
aggregate posterior exactly over the validation images at every validation epoch, and draws what the monitor logged
(``kl_decomposition/{mutual_info,total_correlation,dimension_kl,kl}``) against the epoch, one panel per objective:
the picture of the chart the monitor writes to TensorBoard.

Usage::

    python benchmarks/kl_decomposition_chart.py                  # about two minutes on one CPU core
    python benchmarks/kl_decomposition_chart.py --smoke          # seconds (the test)

Writes the values (JSON, ``--results``) and the figure (``--figure``; matplotlib, a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_vae import VAE  # noqa: E402
from lightning_vae.callbacks import KLDecompositionMonitor  # noqa: E402
from lightning_vae.data import ShapesDataModule  # noqa: E402
from lightning_vae.nets import ConvDecoder, ConvEncoder  # noqa: E402
from lightning_vae.objective import ELBO, BetaTCVAE  # noqa: E402

PARTS = ("mutual_info", "total_correlation", "dimension_kl", "kl")


class _History(Callback):
    """What the monitor logged at each validation epoch (it runs first: callbacks are called in order)."""

    def __init__(self, monitor: KLDecompositionMonitor) -> None:
        self.monitor = monitor
        self.rows: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking and self.monitor.last:
            self.rows.append({"epoch": trainer.current_epoch + 1, **self.monitor.last})


def run(objective: Any, args: argparse.Namespace, data: ShapesDataModule) -> list[dict[str, float]]:
    """One training run; the monitor's values after each epoch."""
    seed_everything(args.seed, verbose=False)
    vae = VAE(
        ConvEncoder(1, args.image_size, latent_dim=10),
        ConvDecoder(10, 1, args.image_size),
        objective=objective,
        optimizer=lambda params: torch.optim.Adam(params, lr=args.lr),
    )
    monitor = KLDecompositionMonitor()
    history = _History(monitor)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[monitor, history],
    )
    trainer.fit(vae, datamodule=data)
    return history.rows


def figure(results: dict[str, Any], path: Path) -> None:
    """One panel per objective: the three parts and their sum against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), sharey=True)
    styles = {
        "mutual_info": ("index-code MI", "tab:green", "-"),
        "total_correlation": ("total correlation", "tab:red", "-"),
        "dimension_kl": ("dimension-wise KL", "tab:gray", "-"),
        "kl": ("KL (their sum)", "black", "--"),
    }
    for ax, (name, rows) in zip(axes, runs.items()):
        epochs = [row["epoch"] for row in rows]
        for part in PARTS:
            label, color, line = styles[part]
            ax.plot(epochs, [row[part] for row in rows], line, color=color, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("nats (validation set, exact sums)")
    axes[0].legend(fontsize=8)
    s = results["settings"]
    fig.suptitle(
        f"kl_decomposition/* over training: {s['image_size']} px shapes, {s['n_train']} images, lr {s['lr']}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny data, two epochs (seconds)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "kl_decomposition_chart.json"))
    p.add_argument("--figure", default=str(ROOT / "docs" / "kl_decomposition.png"))
    args = p.parse_args(argv)
    if args.smoke:
        args.n_train, args.n_val, args.epochs, args.batch_size = 64, 32, 2, 32
    data = ShapesDataModule(
        image_size=args.image_size, n_train=args.n_train, n_val=args.n_val, batch_size=args.batch_size
    )
    objectives = {"ELBO": ELBO(), f"β-TCVAE, β = {args.beta:g}": BetaTCVAE(beta=args.beta)}
    results = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("results", "figure", "smoke")},
        "runs": {name: run(objective, args, data) for name, objective in objectives.items()},
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(results, indent=1))
    figure(results, Path(args.figure))
    for name, rows in results["runs"].items():
        last = rows[-1]
        print(f"{name}: epoch {last['epoch']}: " + ", ".join(f"{k} {last[k]:.2f}" for k in PARTS))
    return results


if __name__ == "__main__":
    main()
