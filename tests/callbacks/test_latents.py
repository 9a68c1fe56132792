"""PosteriorMeanWriter: `predict` writes the posterior means of a checkpoint in data-set order, with the labels;
argument validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.checkpoints import DATA, DATA_ARGS, loaded, train_checkpoint, val_images
from support.paths import ROOT

from lightning_vae.callbacks import PosteriorMeanWriter
from lightning_vae.cli import build_cli
from lightning_vae.data import ShapesDataModule


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_checkpoint(tmp_path_factory.mktemp("trained"))


def test_predict_with_the_writer_exports_posterior_means_in_dataset_order(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "latents.npy"
    build_cli(
        args=[
            "predict",
            f"--config={ROOT / 'configs' / 'shapes.yaml'}",
            *DATA_ARGS,
            "--model.encoder.init_args.image_size=28",
            "--model.decoder.init_args.image_size=28",
            "--trainer.callbacks=[]",
            "--trainer.callbacks+=PosteriorMeanWriter",
            f"--trainer.callbacks.output_path={out}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--ckpt_path={checkpoint}",
        ]
    )
    x = val_images(DATA["n_val"])
    with torch.no_grad():
        expected = loaded(checkpoint).encode(x).mean.numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
    data = ShapesDataModule(**DATA)
    data.setup("predict")
    np.testing.assert_array_equal(np.load(tmp_path / "latents_labels.npy"), data.val_set.factors.numpy())


def test_writer_validation() -> None:
    with pytest.raises(ValueError, match=r"`output_path` to end in .npy, got 'latents.csv'"):
        PosteriorMeanWriter("latents.csv")
