"""PosteriorMeanWriter: `predict` writes the posterior means of a checkpoint in data-set order, with the labels;
argument validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from support.checkpoints import DATA, DATA_ARGS, loaded, train_checkpoint, val_images
from support.modules import trainer_kwargs
from support.paths import ROOT
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.callbacks import PosteriorMeanWriter
from lightning_vae.cli import build_cli
from lightning_vae.data import ShapesDataModule
from lightning_vae.models import StackedVAEModel


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_checkpoint(tmp_path_factory.mktemp("trained"))


def test_predict_with_the_writer_exports_posterior_means_in_dataset_order(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "latents.npy"
    build_cli(
        args=[
            "predict",
            f"--config={ROOT / 'configs' / 'cli' / 'shapes.yaml'}",
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


def test_a_chosen_group_of_a_stacked_model_is_written(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = VAE(model=StackedVAEModel((1, 4, 4), latent_sizes=(4, 2), hidden_sizes=((8,), (8,)))).eval()
    images = torch.rand(10, 1, 4, 4).round()
    loader = DataLoader(TensorDataset(images, torch.arange(10)), batch_size=4)
    for group, size in (("z1", 4), (None, 2)):
        out = tmp_path / f"{group}.npy"
        trainer = Trainer(**trainer_kwargs(tmp_path, callbacks=[PosteriorMeanWriter(out, group=group)]))
        trainer.predict(vae, dataloaders=loader, return_predictions=False)
        assert np.load(out).shape == (10, size)
    with torch.no_grad():
        expected = vae.model.bottom_up[0](images.flatten(1))[0]  # the mean of q(z1 | x), by hand
    np.testing.assert_allclose(np.load(tmp_path / "z1.npy"), expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "z1_labels.npy"), np.arange(10))
    with pytest.raises(ValueError, match=r"`group` of PosteriorMeanWriter to be one of .*\('z2', 'z1'\), got 'z'"):
        Trainer(**trainer_kwargs(tmp_path, callbacks=[PosteriorMeanWriter(group="z")])).predict(vae, loader)
    with pytest.raises(TypeError, match=r"Expected `group` to be a latent group's name or None, got 2 \(int\)"):
        PosteriorMeanWriter(group=2)  # type: ignore[arg-type]
