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
from lightning_vae.callbacks.embedding import write_projector_embedding
from lightning_vae.data import FACTOR_NAMES, ShapesDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder


def read_config(log_dir: Path) -> ProjectorConfig:
    return text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())


def read_png(path: Path) -> np.ndarray:
    return decode_png(path.read_bytes())


def test_write_projector_embedding_files(tmp_path: Path) -> None:
    vectors = torch.randn(5, 3)
    labels = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    thumbs = torch.rand(5, 1, 4, 6)
    folder = Path(write_projector_embedding(tmp_path, "latent/mu", 12, vectors, labels, ["a", "b"], thumbs))
    assert folder == tmp_path / "00012" / "latent_mu"
    np.testing.assert_allclose(
        np.loadtxt(folder / "tensors.tsv", delimiter="\t"), vectors.numpy(), rtol=1e-5, atol=1e-6
    )
    assert (folder / "metadata.tsv").read_text().splitlines() == ["a\tb", "0\t1", "2\t3", "4\t5", "6\t7", "8\t9"]
    sprite = read_png(folder / "sprite.png")[..., 0]  # 3 x 3 cells of 4 x 6, no padding, row by row
    assert sprite.shape == (3 * 4, 3 * 6)
    for i in range(5):
        r, c = divmod(i, 3)
        expected = np.rint(thumbs[i, 0].numpy() * 255)
        np.testing.assert_array_equal(sprite[r * 4 : (r + 1) * 4, c * 6 : (c + 1) * 6], expected)
    (entry,) = read_config(tmp_path).embeddings
    assert entry.tensor_name == "latent/mu:00012" and entry.tensor_path == "00012/latent_mu/tensors.tsv"
    assert (
        entry.metadata_path == "00012/latent_mu/metadata.tsv"
        and entry.sprite.image_path == "00012/latent_mu/sprite.png"
    )
    assert list(entry.sprite.single_image_dim) == [6, 4]  # width, height

    write_projector_embedding(tmp_path, "latent/mu", 20, vectors, torch.arange(5))  # a later step adds an entry
    write_projector_embedding(tmp_path, "latent/mu", 20, vectors * 2)  # the same step replaces its entry
    names = [e.tensor_name for e in read_config(tmp_path).embeddings]
    assert names == ["latent/mu:00012", "latent/mu:00020"]
    assert (tmp_path / "00020" / "latent_mu" / "metadata.tsv").read_text().splitlines()[:2] == ["0", "1"]  # one column


def test_write_projector_embedding_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`vectors` of shape \(N, D\)"):
        write_projector_embedding(tmp_path, "t", 0, torch.zeros(3))
    with pytest.raises(ValueError, match=r"`metadata` of shape \(3,\) or \(3, K\), got \(2,\)"):
        write_projector_embedding(tmp_path, "t", 0, torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"`metadata_header` with 2 names, got \['a'\]"):
        write_projector_embedding(tmp_path, "t", 0, torch.zeros(3, 2), torch.zeros(3, 2), ["a"])
    with pytest.raises(ValueError, match="the projector takes at most 8192x8192"):
        write_projector_embedding(
            tmp_path, "t", 0, torch.zeros(5, 2), thumbnails=torch.zeros(1, 1, 1, 1).expand(5, 1, 4097, 4097)
        )


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
    with pytest.raises(ValueError, match="`n_examples` to be a positive int, got 0"):
        LatentEmbeddingLogger(n_examples=0)
    with pytest.raises(ValueError, match="`every_n_epochs` to be a positive int or None, got 0"):
        LatentEmbeddingLogger(every_n_epochs=0)
    assert LatentEmbeddingLogger(tag="a").state_key != LatentEmbeddingLogger(tag="b").state_key
