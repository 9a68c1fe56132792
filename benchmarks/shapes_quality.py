"""Does a trained shapes model keep each object's shape? A shape classifier judges reconstructions and samples.

The shapes data carry their generative factors (shape, scale, orientation, position). A small CNN is trained on
the data's own shape labels (square, ellipse, heart) from images of a separate draw (``--classifier_seed``), then
judges, on the validation images of the run:

- ``originals``: its accuracy on the validation images themselves (what it can do at all);
- ``reconstructions``: its accuracy on the model's reconstructions of the same images (the likelihood means that
  ``lightning-vae reconstruct`` shows), against their true shape; ``ratio`` = reconstructions / originals;
- ``samples``: the fraction of prior samples (``lightning-vae sample``, seed 0) it gives one shape with
  probability >= ``--confident``, beside the same fraction for the originals (a blob is not confidently any shape).

With ``--figure`` it writes a PNG of validation images, each row followed by its reconstructions, and a grid of
samples below (the README's picture of the main job).

    python benchmarks/shapes_quality.py --ckpt_path logs/shapes/checkpoints/last.ckpt \\
        --output benchmarks/shapes_quality.json --figure docs/main_job.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_vae import VAE
from lightning_vae.callbacks.views import prior_samples, reconstruction_rows
from lightning_vae.data.shapes import SHAPE_NAMES, ShapesDataset
from lightning_vae.viz import image_grid, write_png


def shape_classifier() -> nn.Module:
    """A small CNN from a ``(B, 1, S, S)`` image to logits over the three shapes."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, len(SHAPE_NAMES)),
    )  # fmt: skip


def train_classifier(images: Tensor, shapes: Tensor, epochs: int, seed: int, batch_size: int = 128) -> nn.Module:
    """Fit :func:`shape_classifier` to ``images`` and their shape labels with Adam (lr 1e-3)."""
    torch.manual_seed(seed)
    net = shape_classifier()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for index in torch.randperm(len(images)).split(batch_size):
            loss = nn.functional.cross_entropy(net(images[index]), shapes[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def probabilities(net: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Shape probabilities ``(N, 3)`` of ``images``."""
    return torch.cat([net(chunk).softmax(-1) for chunk in images.split(batch_size)])


@torch.no_grad()
def judge(
    model: Any, net: nn.Module, images: Tensor, shapes: Tensor, n_samples: int, confident: float
) -> dict[str, Any]:
    """Accuracies on originals and reconstructions, and the confident fractions of originals and samples."""
    recon = torch.cat([model.reconstruct(chunk) for chunk in images.split(250)])
    p_orig, p_recon = probabilities(net, images), probabilities(net, recon)
    p_samples = probabilities(net, prior_samples(model, n_samples, seed=0))
    acc_orig = float((p_orig.argmax(-1) == shapes).float().mean())
    acc_recon = float((p_recon.argmax(-1) == shapes).float().mean())
    per_shape = {
        name: float((p_recon.argmax(-1)[shapes == i] == i).float().mean()) for i, name in enumerate(SHAPE_NAMES)
    }
    return {
        "originals": {"accuracy": acc_orig, "confident": float((p_orig.max(-1).values >= confident).float().mean())},
        "reconstructions": {"accuracy": acc_recon, "per_shape": per_shape},
        "ratio": acc_recon / acc_orig if acc_orig > 0 else float("nan"),
        "samples": {
            "confident": float((p_samples.max(-1).values >= confident).float().mean()),
            "shares": [float((p_samples.argmax(-1) == i).float().mean()) for i in range(len(SHAPE_NAMES))],
        },
    }


@torch.no_grad()
def figure(model: Any, images: Tensor, path: str | Path, n_rows: int = 2, n_samples: int = 32) -> Path:
    """Validation images, each row followed by its reconstructions, above a grid of prior samples (seed 0)."""
    recon = reconstruction_rows(model, images[: 8 * n_rows], 8)
    samples = prior_samples(model, n_samples, seed=0)
    grid = image_grid(torch.cat([recon, samples]), 8, (0.0, 1.0))
    return write_png(path, grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint of a shapes model (e.g. the main job's)")
    parser.add_argument("--n_train", type=int, default=20_000, help="classifier training images")
    parser.add_argument("--epochs", type=int, default=3, help="classifier epochs")
    parser.add_argument("--classifier_seed", type=int, default=1234, help="seed of the classifier's own images")
    parser.add_argument("--n_val", type=int, default=2000, help="validation images judged (the run's, seed 1)")
    parser.add_argument("--val_seed", type=int, default=1, help="seed of the validation images (data seed + 1)")
    parser.add_argument("--n_samples", type=int, default=1000, help="prior samples judged")
    parser.add_argument("--confident", type=float, default=0.9, help="probability that counts as a clear shape")
    parser.add_argument("--classifier", default=None, help="weights file: loaded when it exists, else written")
    parser.add_argument("--output", default=None, help="JSON file for the figures")
    parser.add_argument("--figure", default=None, help="PNG of reconstructions and samples")
    args = parser.parse_args()

    model = VAE.load_from_checkpoint(args.ckpt_path, map_location="cpu").eval()
    size = int(model.model.data_shape[-1])
    start = time.perf_counter()
    if args.classifier and Path(args.classifier).is_file():  # the same judge for several checkpoints
        net = shape_classifier()
        net.load_state_dict(torch.load(args.classifier, weights_only=True))
        net.eval()
    else:
        train = ShapesDataset(args.n_train, image_size=size, seed=args.classifier_seed)
        net = train_classifier(train.images, train.factors[:, 0], args.epochs, seed=0)
        if args.classifier:
            torch.save(net.state_dict(), args.classifier)
    seconds = time.perf_counter() - start
    val = ShapesDataset(args.n_val, image_size=size, seed=args.val_seed)
    result = judge(model, net, val.images, val.factors[:, 0], args.n_samples, args.confident)
    result.update(
        checkpoint=str(args.ckpt_path),
        classifier={"n_train": args.n_train, "epochs": args.epochs, "seed": args.classifier_seed, "seconds": seconds},
        n_val=args.n_val,
    )
    print(
        f"shape accuracy: originals {result['originals']['accuracy']:.3f}, reconstructions "
        f"{result['reconstructions']['accuracy']:.3f} (ratio {result['ratio']:.3f}); "
        f"confident (p >= {args.confident}): originals {result['originals']['confident']:.3f}, "
        f"samples {result['samples']['confident']:.3f}"
    )
    print(
        "per shape (reconstructions): "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["reconstructions"]["per_shape"].items())
    )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.figure:
        print(f"figure: {figure(model, val.images, args.figure)}")


if __name__ == "__main__":
    main()
