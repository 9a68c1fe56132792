"""Corrupt or mismatched inputs stop with a ValueError that names the file and what is wrong."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae import VAE
from lightning_vae.checkpoints import load_checkpoint
from lightning_vae.data import TensorDataModule
from lightning_vae.data.mnist import load_mnist, read_idx
from lightning_vae.nets import MLPDecoder, MLPEncoder


def _copy_mnist(mnist_dir: Path, tmp_path: Path) -> Path:
    for f in mnist_dir.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_truncated_gzip_names_the_file(mnist_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = (mnist_dir / path.name).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{path.name}.*truncated"):
        read_idx(path)


def test_crc_damaged_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"))
    raw[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{path.name}.*corrupt"):
        read_idx(path)


def test_short_idx_body_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match=r"x\.idx.*truncated or corrupt"):
        read_idx(path)


def test_corrupt_file_inside_load_mnist(mnist_dir: Path, tmp_path: Path) -> None:
    folder = _copy_mnist(mnist_dir, tmp_path)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(folder, "test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"not a checkpoint at all\n" * 10, "not a PyTorch checkpoint"),
    ],
)
def test_non_checkpoint_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    for load in (load_checkpoint, VAE.load_from_checkpoint):
        with pytest.raises(ValueError, match=message) as info:
            load(path)
        assert str(path) in str(info.value)


def test_torch_file_without_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"not a Lightning checkpoint.*state_dict"):
        VAE.load_from_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    vae = tiny_vae()
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, limit_val_batches=0))
    trainer.fit(vae, datamodule=TensorDataModule(torch.rand(16, 1, 8, 8), batch_size=8))
    trainer.save_checkpoint(tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"cut\.ckpt.*truncated or corrupt"):
        VAE.load_from_checkpoint(tmp_path / "cut.ckpt")
    # networks of another size than the weights: named as such
    with pytest.raises(ValueError, match="do not fit the networks"):
        VAE.load_from_checkpoint(
            tmp_path / "full.ckpt",
            encoder=MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(16,)),
            decoder=MLPDecoder(4, (1, 8, 8), hidden_sizes=(32,)),
        )


def test_wrong_image_size_for_the_encoder() -> None:
    vae = VAE(MLPEncoder((1, 28, 28), latent_dim=4), MLPDecoder(4, (1, 28, 28)))
    with pytest.raises(ValueError, match=r"MLPEncoder expects.*\(1, 28, 28\).*1, 32, 32"):
        vae.training_step(torch.rand(4, 1, 32, 32), 0)
