"""A small trained checkpoint for the tests of what comes after training (sample, reconstruct, predict writers)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lightning_vae import VAE
from lightning_vae.cli import build_cli
from lightning_vae.data import ShapesDataModule
from support.paths import ROOT

DATA = {"image_size": 28, "n_train": 64, "n_val": 40, "batch_size": 16}
DATA_ARGS = [f"--data.init_args.{k}={v}" for k, v in DATA.items()]


def train_checkpoint(root: Path) -> Path:
    """A small conv VAE trained for two steps through LightningCLI (so the checkpoint records its DataModule)."""
    cwd = os.getcwd()
    os.chdir(root)  # folders the config names relative to the working directory land here, not in the checkout
    try:
        cli = build_cli(
            args=[
                "fit",
                f"--config={ROOT / 'configs' / 'cli' / 'shapes.yaml'}",
                *DATA_ARGS,
                "--model.encoder.init_args.image_size=28",
                "--model.decoder.init_args.image_size=28",
                "--trainer.callbacks=[]",
                "--trainer.max_steps=2",
                "--trainer.limit_val_batches=1",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={root}",
            ]
        )
    finally:
        os.chdir(cwd)
    return root / cli.trainer.checkpoint_callback.best_model_path


def loaded(checkpoint: Path) -> VAE:
    return VAE.load_from_checkpoint(checkpoint, map_location="cpu").eval()


def val_images(n: int) -> torch.Tensor:
    data = ShapesDataModule(**DATA)
    data.setup("validate")
    return data.val_set.images[:n]
