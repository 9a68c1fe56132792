"""dSprites (Matthey et al. 2017) from the official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` in a folder.

The file holds every combination of six factors, ``imgs`` ``(737280, 64, 64)`` uint8 in {0, 1} and
``latents_classes`` ``(737280, 6)`` (colour with one value, shape 3, scale 6, orientation 40, x 32, y 32) in C
order over that grid, beside ``latents_values`` and a pickled ``metadata`` dictionary. It is opened with
``allow_pickle=False``: the metadata is never read (the factor sizes come from ``latents_classes``), so a file
cannot run code when it is loaded. The images are streamed out of the archive in chunks and kept as packed bits
(512 bytes per image, 377 MB for the whole set instead of 3 GB); batches are unpacked as they are read.

The factors are those of disentanglement_lib's ``dsprites_full``: the five that vary, in the file's order.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_vae.checks import check_int, check_type
from lightning_vae.data.common import TrainValDataModule, check_loader_args
from lightning_vae.data.ground_truth import UniformFactorGrid, check_factors
from lightning_vae.data.mnist import MissingDataError

#: The official file's name.
FILE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
#: The factors of the file's ``latents_classes`` columns.
FILE_FACTOR_NAMES = ("color", "shape", "scale", "orientation", "pos_x", "pos_y")
#: The factors the data module reports (the varying ones, as disentanglement_lib's ``dsprites_full``).
FACTOR_NAMES = FILE_FACTOR_NAMES[1:]
#: The factor sizes of the official file.
OFFICIAL_SIZES = (1, 3, 6, 40, 32, 32)

_CHUNK_IMAGES = 16384  # images decompressed at a time: 64 MiB of 64 x 64 uint8


class DSprites:
    """The images (packed bits) and factor grid of a dSprites file; see :func:`load_dsprites`.

    Attributes:
        packed: ``(N, ceil(S * S / 8))`` uint8, one image per row (``numpy.packbits`` of its pixels).
        side: The image side ``S``.
        file_sizes: The sizes of the file's six factors.
    """

    def __init__(self, packed: np.ndarray, side: int, file_sizes: tuple[int, ...]) -> None:
        self.packed, self.side, self.file_sizes = packed, side, file_sizes
        sizes = np.asarray(file_sizes, dtype=np.int64)
        #: Index of an image from its six factor classes: the file's C order.
        self.bases = (np.prod(sizes) // np.cumprod(sizes)).astype(np.int64)

    def __len__(self) -> int:
        return self.packed.shape[0]

    def images(self, indices: np.ndarray) -> Tensor:
        """Float images ``(n, 1, S, S)`` in {0, 1} of the given rows."""
        pixels = np.unpackbits(self.packed[indices], axis=1, count=self.side * self.side)
        return torch.from_numpy(pixels).view(-1, 1, self.side, self.side).float()

    def index(self, factors: np.ndarray) -> np.ndarray:
        """Rows of the images of the varying factors ``(n, 5)`` (the constant colour factor is 0)."""
        full = np.concatenate([np.zeros((factors.shape[0], 1), dtype=np.int64), factors], axis=1)
        return full @ self.bases


def _malformed(path: Path, what: str) -> ValueError:
    return ValueError(f"{str(path)!r} is not a dSprites file as {FILE_NAME} is: {what}")


def _read_packed_images(archive: zipfile.ZipFile, path: Path) -> tuple[np.ndarray, int]:
    """Stream ``imgs.npy`` out of the archive in chunks, check the pixels are 0/1 and pack them."""
    with archive.open("imgs.npy") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version}")
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
        except ValueError as err:
            raise _malformed(path, f"its imgs array has no valid .npy header ({err})") from err
        if len(shape) != 3 or shape[1] != shape[2] or fortran or dtype.kind not in "biu":
            raise _malformed(path, f"imgs is a {dtype} array of shape {shape}, expected (N, S, S) of 0/1 integers")
        n, side = shape[0], shape[1]
        per_image = side * side * dtype.itemsize
        packed = np.empty((n, (side * side + 7) // 8), dtype=np.uint8)
        for start in range(0, n, _CHUNK_IMAGES):
            count = min(_CHUNK_IMAGES, n - start)
            raw = f.read(count * per_image)
            if len(raw) != count * per_image:
                raise _malformed(path, f"imgs is truncated (image {start + len(raw) // per_image} of {n})")
            chunk = np.frombuffer(raw, dtype=dtype).reshape(count, side * side)
            if chunk.size and (chunk.min() < 0 or chunk.max() > 1):
                raise _malformed(path, "imgs holds values other than 0 and 1")
            packed[start : start + count] = np.packbits(chunk.astype(np.uint8, copy=False), axis=1)
    return packed, side


def load_dsprites(data_dir: str | os.PathLike) -> DSprites:
    """Read :data:`FILE_NAME` from ``data_dir`` with ``allow_pickle=False``.

    Checks that ``latents_classes`` is the full factor grid in C order (what the image index rests on) and that the
    images are binary; a smaller file of the same layout (any factor sizes, any square side) reads the same way.

    Raises:
        MissingDataError: If the file is not in ``data_dir`` (the message names it).
        ValueError: For a file that is not a dSprites archive (the message names the file and what is wrong).
    """
    path = Path(data_dir) / FILE_NAME
    if not path.is_file():
        raise MissingDataError(
            f"dSprites file {FILE_NAME!r} not found in {str(Path(data_dir).resolve())!r}: download it from "
            "https://github.com/deepmind/dsprites-dataset and put it there"
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise _malformed(path, f"it cannot be read as an .npz archive ({err})") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _malformed(path, "it is a single array, not an .npz archive")
    with npz:
        missing = [k for k in ("imgs", "latents_classes") if k not in npz.files]
        if missing:
            raise _malformed(path, f"it has no {' or '.join(missing)} (arrays: {sorted(npz.files)})")
        try:
            classes = np.asarray(npz["latents_classes"])
        except ValueError as err:  # an object array: refused without unpickling it
            raise _malformed(path, f"latents_classes cannot be read without pickle ({err})") from err
        if npz.zip is None:  # pragma: no cover - an open NpzFile always has its archive
            raise _malformed(path, "its archive is closed")
        packed, side = _read_packed_images(npz.zip, path)
    if classes.ndim != 2 or classes.shape != (packed.shape[0], len(FILE_FACTOR_NAMES)):
        raise _malformed(
            path, f"latents_classes has shape {classes.shape}, expected ({packed.shape[0]}, {len(FILE_FACTOR_NAMES)})"
        )
    if not np.issubdtype(classes.dtype, np.integer) or classes.size == 0 or classes.min() < 0:
        raise _malformed(path, f"latents_classes is not a table of factor indices ({classes.dtype})")
    sizes = tuple(int(s) + 1 for s in classes.max(0))
    grid = np.stack(np.unravel_index(np.arange(classes.shape[0]), sizes), axis=1)
    if int(np.prod(sizes)) != classes.shape[0] or not np.array_equal(classes, grid):
        raise _malformed(path, f"latents_classes is not every combination of sizes {sizes} in C order")
    if sizes[0] != 1:
        raise _malformed(path, f"its first factor (colour) takes {sizes[0]} values, expected 1")
    return DSprites(packed, side, sizes)


class DSpritesDataset(Dataset):
    """Rows ``indices`` of a :class:`DSprites`: items ``(image (1, S, S) float, factors (5,) int64)``."""

    def __init__(self, data: DSprites, indices: np.ndarray) -> None:
        self.data, self.indices = data, np.asarray(indices, dtype=np.int64)
        full = np.stack(np.unravel_index(self.indices, data.file_sizes), axis=1)
        self.factors = torch.from_numpy(full[:, 1:].astype(np.int64))

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.data.images(self.indices[[i]])[0], self.factors[i]

    def __getitems__(self, items: list[int]) -> list[tuple[Tensor, Tensor]]:
        # DataLoader's batched fetch: one unpack for the whole batch
        images = self.data.images(self.indices[items])
        return list(zip(images, self.factors[items]))


class DSpritesDataModule(UniformFactorGrid, TrainValDataModule):
    """dSprites read from ``data_dir``; batches are ``(images (B, 1, 64, 64) in {0, 1}, factors (B, 5))``.

    ``val_size`` images drawn at random (seeded) are held out for validation; training uses the rest (the
    disentanglement benchmarks train on all of it: ``val_size=0`` does). The module is a ground-truth source
    (:class:`~lightning_vae.data.ground_truth.GroundTruthData`) over the five varying factors, for the
    disentanglement metrics; the file is read at ``setup`` (or the first ``render``), once.

    Args:
        data_dir: Folder holding :data:`FILE_NAME`.
        batch_size: Batch size.
        val_size: Images held out for validation.
        num_workers: DataLoader workers.
        seed: Seed of the hold-out draw and of the training order.

    Example::

        >>> dm = DSpritesDataModule("path/to/dsprites")  # nothing is read before setup
        >>> dm.factor_names
        ('shape', 'scale', 'orientation', 'pos_x', 'pos_y')
    """

    factor_names = FACTOR_NAMES

    def __init__(
        self, data_dir: str, batch_size: int = 64, val_size: int = 10000, num_workers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir: str | os.PathLike = check_type("data_dir", data_dir, (str, os.PathLike), "a folder path")
        self.val_size = check_int("val_size", val_size, low=0)
        self.batch_size, self.num_workers, self.seed = check_loader_args(batch_size, num_workers, seed)
        self.data: DSprites | None = None
        self.train_set: DSpritesDataset | None = None
        self.val_set: DSpritesDataset | None = None

    def _load(self) -> DSprites:
        if self.data is None:
            self.data = load_dsprites(self.data_dir)
            if self.val_size >= len(self.data):
                raise ValueError(f"Expected `val_size` to be below the {len(self.data)} images, got {self.val_size}")
        return self.data

    @property
    def factor_sizes(self) -> tuple[int, ...]:  # type: ignore[override]
        """The sizes of the five factors (read from the file: ``(3, 6, 40, 32, 32)`` for the official one)."""
        return self._load().file_sizes[1:]

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """``(1, S, S)`` (read from the file)."""
        return (1, self._load().side, self._load().side)

    def render(self, factors: Any) -> Tensor:
        """The float images ``(n, 1, S, S)`` of integer factors ``(n, 5)`` (the file's images, looked up)."""
        data = self._load()
        return data.images(data.index(check_factors(factors, self.factor_sizes)))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self._load()
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed)).numpy()
        val, train = np.sort(order[: self.val_size]), np.sort(order[self.val_size :])
        self.train_set, self.val_set = DSpritesDataset(data, train), DSpritesDataset(data, val)


__all__ = [
    "DSprites",
    "DSpritesDataModule",
    "DSpritesDataset",
    "FACTOR_NAMES",
    "FILE_FACTOR_NAMES",
    "FILE_NAME",
    "OFFICIAL_SIZES",
    "load_dsprites",
]
