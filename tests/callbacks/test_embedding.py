"""The PROJECTOR files: posterior means, metadata and sprite, checked against the model and the data directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from support.images import decode_png  # the PNG reader written from the specification
from support.modules import trainer_kwargs
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from lightning_vae import VAE
from lightning_vae.callbacks import LatentEmbeddingLogger
from lightning_vae.data import FACTOR_NAMES, ShapesDataModule, TensorDataModule
from lightning_vae.models import StackedVAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder


def read_config(log_dir: Path) -> ProjectorConfig:
    return text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())


def read_png(path: Path) -> np.ndarray:
    return decode_png(path.read_bytes())


def test_callback_writes_the_posterior_means_of_the_validation_examples(tmp_path: Path) -> None:
    shape = (1, 28, 28)
    model = VAE(MLPEncoder(shape, latent_dim=3, hidden_sizes=(16,)), MLPDecoder(3, shape, hidden_sizes=(16,)))
    data = ShapesDataModule(image_size=28, n_train=64, n_val=48, batch_size=16)
    callback = LatentEmbeddingLogger(n_examples=40, metadata_header=list(FACTOR_NAMES))
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[callback], limit_val_batches=None))
    trainer.fit(model, data)

    log_dir = Path(logger.log_dir)
    (entry,) = read_config(log_dir).embeddings  # only at the end of training by default
    step = trainer.global_step
    assert entry.tensor_name == f"latent/posterior_mean:{step:05d}"
    folder = log_dir / f"{step:05d}" / "latent_posterior_mean"
    x, factors = data.val_set.images[:40], data.val_set.factors[:40]
    model.eval()
    with torch.no_grad():
        means = model.encode(x).mean.numpy()
    np.testing.assert_allclose(np.loadtxt(folder / "tensors.tsv", delimiter="\t"), means, rtol=1e-5, atol=1e-6)
    lines = (folder / "metadata.tsv").read_text().splitlines()
    assert lines[0].split("\t") == list(FACTOR_NAMES)
    np.testing.assert_array_equal(np.array([line.split("\t") for line in lines[1:]], dtype=int), factors.numpy())
    sprite = read_png(folder / "sprite.png")[..., 0]
    assert sprite.shape == (7 * 28, 7 * 28)
    np.testing.assert_array_equal(sprite[28:56, 0:28], x[7, 0].numpy() * 255)  # row 1, column 0 is example 7


def test_every_n_epochs_writes_during_training_too(tmp_path: Path) -> None:
    shape = (1, 28, 28)
    model = VAE(MLPEncoder(shape, latent_dim=2, hidden_sizes=(8,)), MLPDecoder(2, shape, hidden_sizes=(8,)))
    data = ShapesDataModule(image_size=28, n_train=64, n_val=32, batch_size=16)
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = Trainer(
        **trainer_kwargs(
            tmp_path, logger=logger, max_epochs=3, callbacks=[LatentEmbeddingLogger(n_examples=16, every_n_epochs=1)]
        )
    )
    trainer.fit(model, data)
    names = [e.tensor_name for e in read_config(Path(logger.log_dir)).embeddings]
    assert names == [f"latent/posterior_mean:{2 * k:05d}" for k in (1, 2, 3)]  # once per epoch, none twice at the end


def test_validation() -> None:
    with pytest.raises(ValueError, match="Expected `n_examples` to be an int >= 1, got 0"):
        LatentEmbeddingLogger(n_examples=0)
    with pytest.raises(TypeError, match="Expected `n_examples` to be an int, got 10.0"):
        LatentEmbeddingLogger(n_examples=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `every_n_epochs` to be an int >= 1, got 0"):
        LatentEmbeddingLogger(every_n_epochs=0)
    with pytest.raises(ValueError, match=r"Expected `value_range` to be a pair \(low, high\) with low < high"):
        LatentEmbeddingLogger(value_range=(0.0, 0.0))
    assert LatentEmbeddingLogger(every_n_epochs=None).every_n_epochs is None
    assert LatentEmbeddingLogger(tag="a").state_key != LatentEmbeddingLogger(tag="b").state_key


def test_a_chosen_group_of_a_stacked_model_is_shown(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VAE(model=StackedVAEModel((1, 4, 4), latent_sizes=(4, 2), hidden_sizes=((8,), (8,))))
    images = torch.rand(24, 1, 4, 4).round()
    data = TensorDataModule(images, val=images, batch_size=8, shuffle=False)
    folders = {}
    for group in (None, "z1"):  # z1 last: the means below are those of the weights it was written with
        logger = TensorBoardLogger(tmp_path, name=str(group), version=0)
        callback = LatentEmbeddingLogger(n_examples=12, group=group)
        trainer = Trainer(**trainer_kwargs(tmp_path, logger=logger, max_epochs=1, callbacks=[callback]))
        trainer.fit(model, data)
        folders[group] = Path(logger.log_dir) / f"{trainer.global_step:05d}" / "latent_posterior_mean"
    with torch.no_grad():
        z1_means = model.model.bottom_up[0](images[:12].flatten(1))[0]  # the mean of q(z1 | x), by hand
    np.testing.assert_allclose(np.loadtxt(folders["z1"] / "tensors.tsv"), z1_means.numpy(), rtol=1e-5, atol=1e-6)
    assert np.loadtxt(folders[None] / "tensors.tsv").shape == (12, 2)  # the first group, z2
    with pytest.raises(ValueError, match=r"`group` of LatentEmbeddingLogger to be one of .*\('z2', 'z1'\), got 'z0'"):
        Trainer(**trainer_kwargs(tmp_path, callbacks=[LatentEmbeddingLogger(group="z0")])).validate(model, data)
