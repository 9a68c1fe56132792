"""MNIST: IDX reading and corruption, the real files' statistics, binarisation, missing files, downloads, arguments."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_vae.data import (
    MissingDataError,
    MNISTDataModule,
    load_mnist,
    read_idx,
)
from lightning_vae.data.mnist import download_file


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: MNISTDataModule("d", binarize="otsu"), ValueError, r"`binarize` to be one of \('dynamic', 'static'"),
        (lambda: MNISTDataModule("d", binarize=True), TypeError, r"`binarize` to be one of .*got True \(bool\)"),
        (lambda: MNISTDataModule("d", batch_size=0), ValueError, r"`batch_size` to be an int >= 1, got 0"),
        (lambda: MNISTDataModule("d", val_size=60000), ValueError, r"`val_size` to be an int >= 0 and <= 59999"),
        (lambda: MNISTDataModule("d", train_subset=0), ValueError, r"`train_subset` to be an int >= 1, got 0"),
        (lambda: MNISTDataModule("d", seed="0"), TypeError, r"`seed` to be an int, got '0' \(str\)"),
        (lambda: MNISTDataModule("d", download="yes"), TypeError, r"`download` to be a bool, got 'yes'"),
        (lambda: MNISTDataModule(28), TypeError, r"`data_dir` to be a folder path, got 28 \(int\)"),
        (lambda: load_mnist("d", "val"), ValueError, r"`split` to be one of \('train', 'test'\), got 'val'"),
    ],
)
def test_datamodule_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_read_idx_round_trip_and_corruption(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short.gz")


def test_real_mnist_matches_the_canonical_statistics(mnist_dir: Path) -> None:
    images, labels = load_mnist(mnist_dir, "train")
    assert images.shape == (60000, 1, 28, 28)
    assert labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert images.mean().item() == pytest.approx(0.13066, abs=1e-5)
    assert images.std().item() == pytest.approx(0.30811, abs=1e-5)
    _, test_labels = load_mnist(mnist_dir, "test")
    assert test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_binarisation(mnist_dir: Path) -> None:
    dm = MNISTDataModule(str(mnist_dir), batch_size=64, val_size=500, binarize="dynamic", train_subset=256)
    dm.setup("fit")
    first = next(iter(dm.train_dataloader()))[0]
    assert set(first.unique().tolist()) == {0.0, 1.0}
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    torch.manual_seed(0)
    a = torch.cat([b[0] for b in loader])
    torch.manual_seed(1)  # the global random state plays no part: the draws are keyed by (seed, epoch, batch)
    assert torch.equal(torch.cat([b[0] for b in loader]), a)
    loader.sampler.set_epoch(1)
    b = torch.cat([b[0] for b in loader])
    assert not torch.equal(a, b)  # redrawn every epoch
    val_a = next(iter(dm.val_dataloader()))[0]
    val_b = next(iter(dm.val_dataloader()))[0]
    assert torch.equal(val_a, val_b) and set(val_a.unique().tolist()) == {0.0, 1.0}  # fixed for comparability
    grey = MNISTDataModule(str(mnist_dir), binarize="none", val_size=500, train_subset=64)
    grey.setup("fit")
    assert len(grey.train_set) == 64 and len(grey.val_set) == 500
    assert grey.train_set.tensors[0].unique().numel() > 2


def test_missing_mnist_file_is_named(tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tmp_path))
    with pytest.raises(MissingDataError, match="'train-images-idx3-ubyte.gz' not found") as info:
        dm.setup("fit")
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)


def test_download_verifies_the_checksum(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    payload = b"some bytes"
    (mirror / "file.gz").write_bytes(payload)
    good = hashlib.md5(payload).hexdigest()
    out = download_file("file.gz", tmp_path / "data", mirrors=[mirror.as_uri() + "/"], md5=good)
    assert out.read_bytes() == payload
    with pytest.raises(ValueError, match="checksum"):
        download_file("file.gz", tmp_path / "other", mirrors=[mirror.as_uri() + "/"], md5="0" * 32)
    assert not (tmp_path / "other" / "file.gz").exists()


@pytest.mark.parametrize(("ci", "outcome"), [("true", "fail"), ("1", "fail"), ("", "skip"), ("false", "skip")])
def test_missing_mnist_fails_in_ci_and_skips_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    import support.paths

    monkeypatch.setattr(support.paths, "MNIST_DIR", tmp_path)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match=r"needs real MNIST in .*missing train-images-idx3-ubyte.gz"):
        support.paths.require_mnist()
    for name in support.paths.MNIST_FILES:
        (tmp_path / name).write_bytes(b"")
    assert support.paths.require_mnist() == tmp_path
