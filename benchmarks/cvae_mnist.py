"""The conditional VAE of the README on MNIST: train it, draw one row of samples per digit, report its test bound.

``ConditionalVAEModel`` (784-500-20 MLPs on one-hot labels, Bernoulli, dynamically binarised MNIST) trained by
``VAE`` for ``--epochs`` epochs; then ``benchmarks/figures/cvae_samples.png`` (10 rows, one per digit, the same
latent noise in every column: ``class_samples``) and, in ``benchmarks/cvae_results.json``, the test ELBO and
IW-NLL ``-log p(x | y)`` (k = ``--k``) on the 10,000 MNIST test images with the commit, seed and epochs.

    python benchmarks/cvae_mnist.py --epochs 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_vae import VAE
from lightning_vae.callbacks.views import class_samples
from lightning_vae.data import MNISTDataModule
from lightning_vae.functional.nll import iw_nll
from lightning_vae.models import ConditionalVAEModel
from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder
from lightning_vae.viz import image_grid, write_png

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST_DIR = os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--k", type=int, default=100, help="importance samples of the test IW-NLL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=DEFAULT_MNIST_DIR)
    parser.add_argument("--figure", default=str(ROOT / "benchmarks" / "figures" / "cvae_samples.png"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "cvae_results.json"))
    parser.add_argument("--smoke", action="store_true", help="2 steps, 200 test images (CI)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed, verbose=False)
    shape = (1, 28, 28)
    model = ConditionalVAEModel(
        ConditionalMLPEncoder(shape, 10, 20, (500,)), ConditionalMLPDecoder(20, 10, shape, (500,)), n_classes=10
    )
    vae = VAE(model=model)
    dm = MNISTDataModule(args.data_dir, batch_size=100, binarize="dynamic", seed=args.seed)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        limit_train_batches=2 if args.smoke else None,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(vae, datamodule=dm)
    dm.setup("test")
    assert dm.test_set is not None
    x, y = dm.test_set.tensors
    if args.smoke:
        x, y = x[:200], y[:200]
    vae.eval()
    with torch.no_grad():
        nll = torch.cat([iw_nll(vae, x[i : i + 500], args.k, context=y[i : i + 500]) for i in range(0, len(y), 500)])
        elbo = torch.cat([-iw_nll(vae, x[i : i + 500], 1, context=y[i : i + 500]) for i in range(0, len(y), 500)])
    write_png(args.figure, image_grid(class_samples(vae, 10, seed=0), nrow=10))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result: dict[str, object] = {
        "what": "conditional VAE on MNIST, one-hot labels, 784-500-20 MLPs: test -log p(x | y) and ELBO (nats)",
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "seed": args.seed,
        "epochs": args.epochs,
        "test_nll_iw": float(nll.mean()),
        "k": args.k,
        "test_elbo_one_sample": float(elbo.mean()),
        "figure": str(Path(args.figure).relative_to(ROOT)) if Path(args.figure).is_relative_to(ROOT) else args.figure,
    }
    Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
