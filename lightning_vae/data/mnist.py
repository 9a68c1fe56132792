"""MNIST from the four standard IDX ``.gz`` files, with static or dynamic binarisation.

No torchvision: the IDX format is read here directly (LeCun et al., "THE MNIST DATABASE").
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae.checks import check_choice, check_int, check_type
from lightning_vae.data.common import check_loader_args, make_loader

#: The two MNIST splits; and how MNIST pixels are binarised (``"none"`` keeps the grey levels).
Split = Literal["train", "test"]
Binarize = Literal["dynamic", "static", "none"]

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
#: MD5 of the files as served by the public mirrors (a download is verified against these).
MIRROR_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
#: Environment variable naming the MNIST folder when ``data_dir`` is not given.
MNIST_DIR_ENV = "LIGHTNING_VAE_MNIST_DIR"

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class MissingDataError(FileNotFoundError, ValueError):
    """A data file is missing; the message names it and says how to get it."""


def read_idx(path: str | os.PathLike, ndim: int | None = None, what: str = "") -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a NumPy array.

    Args:
        path: The file.
        ndim: The number of dimensions the file must hold (its magic number's last byte: 3 for MNIST's images,
            1 for its labels); ``None`` takes any.
        what: What the file should hold, for the message (e.g. ``"images"``).

    Raises:
        ValueError: If the file is not a valid IDX file, holds another number of dimensions than ``ndim`` (a
            labels file saved under an images file's name), or is truncated; naming the file.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:  # type: ignore[operator]
            data = f.read()
    except EOFError as err:
        raise ValueError(f"{path} is truncated: the compressed stream ends early ({err}); download it again") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path} is corrupt (failed the gzip check: {err}); download it again") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()!r})")
    found = data[3]
    if ndim is not None and found != ndim:
        kind = {1: "a labels file", 3: "an images file"}.get(found, "another IDX file")
        magic = f"0x0000{data[2]:02x}{ndim:02x}"
        raise ValueError(
            f"{path} holds a {found}-dimensional IDX array (magic number 0x{data[:4].hex()}: {kind}), expected "
            f"{ndim} dimensions{f' ({what})' if what else ''} (magic number {magic}); is it another file saved "
            "under this name?"
        )
    if len(data) < 4 + 4 * found:
        raise ValueError(f"{path} is truncated or corrupt: its header ends early ({len(data)} bytes)")
    dims = struct.unpack(f">{found}I", data[4 : 4 + 4 * found])
    dtype = _IDX_DTYPES[data[2]]
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * found :]
    if len(body) != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: expected {expected} data bytes for shape {dims}, got {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    name: str, data_dir: str | os.PathLike, mirrors: Sequence[str] = MIRRORS, md5: str | None = None
) -> Path:
    """Download ``name`` from the first mirror that serves it, verify its MD5, and place it in ``data_dir``.

    Raises:
        ValueError: If no mirror served a file with the expected checksum.
    """
    target = Path(data_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = md5 if md5 is not None else MIRROR_MD5.get(name)
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - fixed mirrors or user-given
                    shutil.copyfileobj(response, tmp)
            got = _md5(Path(tmp.name))
            if expected is not None and got != expected:
                errors.append(f"{url}: checksum {got} != {expected}")
                os.unlink(tmp.name)
                continue
            os.replace(tmp.name, target)
            rank_zero_info(f"Downloaded {url} to {target}")
            return target
        except OSError as err:
            errors.append(f"{url}: {err}")
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)
    raise ValueError(f"Could not download {name}: " + "; ".join(errors))


def load_mnist(data_dir: str | os.PathLike, split: Split, download: bool = False) -> tuple[Tensor, Tensor]:
    """Load a split as ``(images, labels)``: images ``(N, 1, 28, 28)`` float in [0, 1], labels ``(N,)`` int64.

    Raises:
        MissingDataError: If a file is missing and ``download`` is off (the message names the file).
        ValueError: For an unknown split, or files that are not MNIST's.
    """
    check_choice("split", split, Split)
    paths = {}
    for kind in ("images", "labels"):
        name = FILES[f"{split}_{kind}"]
        path = Path(data_dir) / name
        if not path.exists():
            if not download:
                raise MissingDataError(
                    f"MNIST file {name!r} not found in {str(Path(data_dir).resolve())!r}. Put the four IDX .gz files "
                    f"there ({', '.join(FILES.values())}), or pass download=True where a network is available"
                )
            download_file(name, data_dir)
        paths[kind] = path
    images = torch.from_numpy(read_idx(paths["images"], ndim=3, what="images").copy()).float().div_(255.0)
    images = images.unsqueeze(1)
    labels = torch.from_numpy(read_idx(paths["labels"], ndim=1, what="labels").astype(np.int64))
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (1, 28, 28):
        raise ValueError(
            f"MNIST files in {data_dir} disagree: images {tuple(images.shape)}, labels {tuple(labels.shape)}"
        )
    return images, labels


class _DynamicBinarize:
    """Collate function that stacks a batch and draws fresh binary pixels with p = intensity.

    Examples come as ``(image, label, key)`` from a keyed training loader: the pixels are drawn from a
    generator seeded with the batch's key, so the same batch of the same epoch is binarised the same way
    in an interrupted-and-resumed run as in an uninterrupted one (and with any number of workers).
    """

    def __call__(self, batch: list[tuple[Tensor, Tensor, int]]) -> tuple[Tensor, Tensor]:
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        return torch.bernoulli(x, generator=torch.Generator().manual_seed(int(batch[0][2]))), y


def _static_binarize(x: Tensor, seed: int) -> Tensor:
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


class MNISTDataModule(LightningDataModule):
    """MNIST read from ``data_dir``; batches are ``(images, labels)`` with images ``(B, 1, 28, 28)`` in [0, 1].

    Validation and test data are binarised once with a fixed seed whenever binarisation is on, so
    their numbers are comparable across runs; the training set is binarised per batch
    (``"dynamic"``, the usual protocol of Burda et al. 2015) or once (``"static"``).

    Args:
        data_dir: Folder holding the four IDX ``.gz`` files; ``None``: the folder named by the environment
            variable ``LIGHTNING_VAE_MNIST_DIR`` (the path used is what the hyperparameters record).
        batch_size: Batch size.
        val_size: Examples held out of the 60,000 training images for validation.
        binarize: ``"dynamic"``, ``"static"`` or ``"none"`` (grey levels in [0, 1]).
        download: Download missing files (checksums verified) when a network is available.
        num_workers: DataLoader workers.
        seed: Seed of the split and of static binarisation.
        train_subset: Use only this many training examples (quick experiments); ``None`` for all.

    Example::

        >>> dm = MNISTDataModule("path/to/mnist", train_subset=256)  # nothing is read before setup
        >>> dm.data_dir, dm.data_shape
        ('path/to/mnist', (1, 28, 28))
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        val_size: int = 5000,
        binarize: Binarize = "dynamic",
        download: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        train_subset: int | None = None,
    ) -> None:
        if data_dir is None:
            data_dir = os.environ.get(MNIST_DIR_ENV) or None  # resolved before save_hyperparameters records it
        super().__init__()
        self.save_hyperparameters()
        if data_dir is not None:
            check_type("data_dir", data_dir, (str, os.PathLike), "a folder path")
        self.binarize: Binarize = check_choice("binarize", binarize, Binarize)
        self.batch_size, self.num_workers, self.seed = check_loader_args(batch_size, num_workers, seed)
        self.val_size = check_int("val_size", val_size, low=0, high=59999)
        self.train_subset = None if train_subset is None else check_int("train_subset", train_subset, low=1)
        self.download = check_type("download", download, bool, "a bool")
        self.data_dir = data_dir
        self.data_shape = (1, 28, 28)
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def _folder(self) -> str:
        if self.data_dir is None:
            raise ValueError(
                "MNISTDataModule needs the folder of the four MNIST IDX .gz files: pass `data_dir` "
                f"(command line: --data.init_args.data_dir=DIR; Hydra: data.data_dir=DIR) or set {MNIST_DIR_ENV}=DIR"
            )
        return str(self.data_dir)

    def prepare_data(self) -> None:
        folder = self._folder()
        if self.download:
            for name in FILES.values():
                if not (Path(folder) / name).exists():
                    download_file(name, folder)

    def setup(self, stage: str | None = None) -> None:
        hp = self
        binary = hp.binarize != "none"
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = load_mnist(self._folder(), "train", download=False)
            order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(hp.seed))
            val_idx, train_idx = order[: hp.val_size], order[hp.val_size :]
            if hp.train_subset is not None:
                train_idx = train_idx[: hp.train_subset]
            train_x = images[train_idx]
            if hp.binarize == "static":
                train_x = _static_binarize(train_x, hp.seed)
            self.train_set = TensorDataset(train_x, labels[train_idx])
            val_x = images[val_idx]
            self.val_set = TensorDataset(_static_binarize(val_x, hp.seed + 1) if binary else val_x, labels[val_idx])
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = load_mnist(self._folder(), "test", download=False)
            self.test_set = TensorDataset(_static_binarize(images, hp.seed + 2) if binary else images, labels)

    def _loader(self, dataset: TensorDataset | None, shuffle: bool, dynamic: bool = False) -> DataLoader:
        return make_loader(
            dataset,
            self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=_DynamicBinarize() if dynamic else None,
            evaluation=not shuffle,
            seed=self.seed,
            keyed=dynamic,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, dynamic=self.binarize == "dynamic")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
