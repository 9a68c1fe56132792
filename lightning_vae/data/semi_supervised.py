"""MNIST for semi-supervised learning: ``n_labelled`` labelled training images balanced per class, the rest unlabelled.

Each training batch holds ``batch_size`` unlabelled examples (label ``-1``) followed by ``labelled_batch_size``
labelled ones, as one ``(x, y)`` batch: the layout :class:`lightning_vae.objective.M2` reads (any model or objective
that reads ``(x, y)`` batches sees them as they are). An epoch is one pass over the unlabelled examples, in the
resumable order of :func:`~lightning_vae.data.common.make_loader`; the labelled examples of a batch are drawn (without
repetition within the batch) from a generator keyed by ``(seed, epoch, rank, batch)``, so a resumed run sees the
same batches and each DDP process draws its own. Validation and test batches are fully labelled.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_vae.checks import check_int
from lightning_vae.data.common import make_loader
from lightning_vae.data.mnist import Binarize, MNISTDataModule, _static_binarize, load_mnist

#: The label of an example without one.
UNLABELLED = -1


def balanced_labelled_split(labels: Tensor, n_labelled: int, n_classes: int, generator: torch.Generator) -> Tensor:
    """Indices of ``n_labelled`` examples, ``n_labelled / n_classes`` of each class, drawn at random.

    Raises:
        ValueError: If ``n_labelled`` is not a multiple of ``n_classes`` or a class has too few examples.

    Example::

        >>> labels = torch.tensor([0, 1, 0, 1, 0, 1, 1])
        >>> index = balanced_labelled_split(labels, 4, 2, torch.Generator().manual_seed(0))
        >>> sorted(labels[index].tolist())
        [0, 0, 1, 1]
    """
    if n_labelled % n_classes:
        raise ValueError(f"Expected `n_labelled` to be a multiple of the {n_classes} classes, got {n_labelled}")
    per_class = n_labelled // n_classes
    chosen = []
    for c in range(n_classes):
        members = (labels == c).nonzero().squeeze(1)
        if members.numel() < per_class:
            raise ValueError(f"Class {c} has {members.numel()} examples, fewer than the {per_class} asked for")
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen)


class _Unlabelled(Dataset):
    """The unlabelled images, each with the label :data:`UNLABELLED`."""

    def __init__(self, images: Tensor) -> None:
        self.images = images
        self.label = torch.tensor(UNLABELLED)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.label


class _AddLabelled:
    """Collate function: stack the unlabelled examples, append labelled ones drawn with the batch's key, binarise.

    Examples come as ``(image, label, key)`` from a keyed training loader (:func:`make_loader` with ``keyed=True``).
    """

    def __init__(self, images: Tensor, labels: Tensor, size: int, dynamic: bool) -> None:
        self.images, self.labels, self.size, self.dynamic = images, labels, size, dynamic

    def __call__(self, batch: list[tuple[Tensor, Tensor, int]]) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(int(batch[0][2]))
        n = self.labels.shape[0]
        if self.size <= n:
            index = torch.randperm(n, generator=generator)[: self.size]
        else:
            index = torch.randint(n, (self.size,), generator=generator)
        x = torch.cat([torch.stack([b[0] for b in batch]), self.images[index]])
        y = torch.cat([torch.stack([b[1] for b in batch]), self.labels[index]])
        return (torch.bernoulli(x, generator=generator) if self.dynamic else x), y


class SemiSupervisedMNISTDataModule(MNISTDataModule):
    """MNIST with ``n_labelled`` labelled training examples (balanced per class); the others lose their labels.

    Batches are ``(images, labels)``; in training, ``batch_size`` unlabelled examples (label ``-1``) then
    ``labelled_batch_size`` labelled ones. The split (validation, labelled, unlabelled) is a function of ``seed``.

    Args:
        data_dir: Folder holding the four MNIST IDX ``.gz`` files (or ``LIGHTNING_VAE_MNIST_DIR``).
        n_labelled: Labelled training examples, a multiple of 10 (100, 600, 1000, 3000 in Kingma et al. 2014).
        batch_size: Unlabelled examples per training batch (and the batch size of evaluation).
        labelled_batch_size: Labelled examples per training batch.
        val_size: Examples held out of the 60,000 training images for validation (labelled).
        binarize: ``"none"`` (grey levels, as the paper's reference code), ``"dynamic"`` or ``"static"``.
        download: Download missing files when a network is available.
        num_workers: DataLoader workers.
        seed: Seed of the split, of the labelled draws and of binarisation.
        train_subset: Keep only this many unlabelled examples (quick experiments); ``None`` for all.

    Example::

        >>> dm = SemiSupervisedMNISTDataModule("path/to/mnist", n_labelled=100)  # nothing is read before setup
        >>> dm.n_labelled, dm.labelled_fraction
        (100, 0.002)
    """

    def __init__(
        self,
        data_dir: str | None = None,
        n_labelled: int = 100,
        batch_size: int = 100,
        labelled_batch_size: int = 100,
        val_size: int = 10000,
        binarize: Binarize = "none",
        download: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        train_subset: int | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, val_size, binarize, download, num_workers, seed, train_subset)
        self.save_hyperparameters()
        self.n_classes = 10
        self.n_labelled = check_int("n_labelled", n_labelled, low=self.n_classes, high=60000 - val_size - 1)
        if self.n_labelled % self.n_classes:
            raise ValueError(f"Expected `n_labelled` to be a multiple of 10 (balanced classes), got {n_labelled}")
        self.labelled_batch_size = check_int("labelled_batch_size", labelled_batch_size, low=1)
        self.labelled: tuple[Tensor, Tensor] | None = None

    @property
    def labelled_fraction(self) -> float:
        """The share of labelled examples in the training set (for :class:`lightning_vae.objective.M2`)."""
        return self.n_labelled / (60000 - self.val_size)

    def setup(self, stage: str | None = None) -> None:
        binary = self.binarize != "none"
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = load_mnist(self._folder(), "train", download=False)
            generator = torch.Generator().manual_seed(self.seed)
            order = torch.randperm(images.shape[0], generator=generator)
            val_idx, train_idx = order[: self.val_size], order[self.val_size :]
            chosen = balanced_labelled_split(labels[train_idx], self.n_labelled, self.n_classes, generator)
            mask = torch.zeros(train_idx.shape[0], dtype=torch.bool)
            mask[chosen] = True
            train_x = images[train_idx]
            if self.binarize == "static":
                train_x = _static_binarize(train_x, self.seed)
            self.labelled = (train_x[mask], labels[train_idx][mask])
            unlabelled = train_x[~mask]
            if self.train_subset is not None:
                unlabelled = unlabelled[: self.train_subset]
            self.train_set = _Unlabelled(unlabelled)  # type: ignore[assignment]
            val_x = images[val_idx]
            self.val_set = TensorDataset(_static_binarize(val_x, self.seed + 1) if binary else val_x, labels[val_idx])
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = load_mnist(self._folder(), "test", download=False)
            self.test_set = TensorDataset(_static_binarize(images, self.seed + 2) if binary else images, labels)

    def train_dataloader(self) -> DataLoader:
        if self.labelled is None:
            raise RuntimeError("Call `setup()` before asking for a dataloader")
        collate = _AddLabelled(*self.labelled, self.labelled_batch_size, self.binarize == "dynamic")
        return make_loader(
            self.train_set,
            self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            collate_fn=collate,
            seed=self.seed,
            keyed=True,
        )


__all__ = ["UNLABELLED", "SemiSupervisedMNISTDataModule", "balanced_labelled_split"]
