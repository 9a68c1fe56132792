"""A DataModule over a user's own tensors or ``.npy`` / ``.npz`` files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset, random_split

from lightning_vae.checks import check_float, check_type
from lightning_vae.data.common import TrainValDataModule, check_loader_args
from lightning_vae.data.mnist import MissingDataError


def load_array(source: Tensor | np.ndarray | str | os.PathLike, key: str | None = None) -> Tensor:
    """Return ``source`` as a float tensor; paths to ``.npy`` or ``.npz`` files are loaded.

    Args:
        source: A tensor, an array, or a path.
        key: The array to take from an ``.npz`` file (default: its only array, or ``"x"``).

    Raises:
        MissingDataError: If the path does not exist.
        ValueError: For an unsupported file type or an ambiguous ``.npz`` without ``key``.
    """
    if isinstance(source, Tensor):
        return source.float()
    if isinstance(source, np.ndarray):
        return torch.from_numpy(source).float()
    path = Path(source)
    if not path.exists():
        raise MissingDataError(f"Data file {str(path)!r} not found")
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False)).float()
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.keys())
            if key is None:
                key = names[0] if len(names) == 1 else ("x" if "x" in names else None)
            if key is None or key not in names:
                raise ValueError(f"Expected `key` to name one of the arrays {names} in {str(path)!r}, got {key!r}")
            return torch.from_numpy(archive[key]).float()
    raise ValueError(f"Expected a .npy or .npz file, got {str(path)!r}")


class TensorDataModule(TrainValDataModule):
    """Serve a user's data: batches are ``(x,)`` tuples of shape ``(B, *data_shape)``.

    Args:
        train: Training data: a tensor, an array or a ``.npy``/``.npz`` path (first axis = examples).
        val: Validation data, or ``None`` to hold out ``val_fraction`` of ``train``.
        val_fraction: Fraction of ``train`` held out when ``val`` is ``None``.
        batch_size: Batch size.
        key: Array name inside ``.npz`` files.
        num_workers: DataLoader workers.
        seed: Seed of the hold-out split.
        shuffle: Shuffle the training data each epoch.

    Example::

        >>> import torch
        >>> dm = TensorDataModule(torch.rand(100, 3), batch_size=10)
        >>> dm.setup()
        >>> next(iter(dm.train_dataloader()))[0].shape
        torch.Size([10, 3])
    """

    def __init__(
        self,
        train: Tensor | str,
        val: Tensor | str | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 128,
        key: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=[n for n, v in (("train", train), ("val", val)) if isinstance(v, Tensor)])
        for name, source in (("train", train), ("val", val)):
            if source is not None:
                check_type(
                    name, source, (Tensor, np.ndarray, str, os.PathLike), "a tensor, an array or a .npy/.npz path"
                )
        self.val_fraction = check_float("val_fraction", val_fraction, low=0.0, high=1.0, strict_high=True)
        self.batch_size, self.num_workers, self.seed = check_loader_args(batch_size, num_workers, seed)
        if key is not None:
            check_type("key", key, str, "the name of an array in the .npz file")
        self._train_source, self._val_source, self.key = train, val, key
        self.shuffle = check_type("shuffle", shuffle, bool, "a bool")
        self.train_set: torch.utils.data.Dataset | None = None
        self.val_set: torch.utils.data.Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        full = TensorDataset(load_array(self._train_source, self.key))
        self.data_shape = tuple(full.tensors[0].shape[1:])
        if self._val_source is not None:
            self.train_set, self.val_set = full, TensorDataset(load_array(self._val_source, self.key))
        else:
            n_val = int(round(len(full) * self.val_fraction))
            generator = torch.Generator().manual_seed(self.seed)
            self.train_set, self.val_set = random_split(full, [len(full) - n_val, n_val], generator=generator)
