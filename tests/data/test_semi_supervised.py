"""data/semi_supervised.py: N labelled examples balanced per class, the rest unlabelled (-1), batches of both,
resumable and different per process; labelled evaluation sets; argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_vae.data import SemiSupervisedMNISTDataModule
from lightning_vae.data.mnist import load_mnist
from lightning_vae.data.semi_supervised import UNLABELLED, balanced_labelled_split


def test_balanced_split_takes_the_same_number_of_each_class_without_repeats() -> None:
    labels = torch.arange(10).repeat_interleave(7)[torch.randperm(70)]
    index = balanced_labelled_split(labels, 30, 10, torch.Generator().manual_seed(0))
    assert index.unique().numel() == 30
    assert labels[index].bincount(minlength=10).tolist() == [3] * 10
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        balanced_labelled_split(labels, 25, 10, torch.Generator())
    with pytest.raises(ValueError, match="fewer than the 8 asked for"):
        balanced_labelled_split(labels, 80, 10, torch.Generator())


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="multiple of 10"):
        SemiSupervisedMNISTDataModule("unused", n_labelled=105)
    with pytest.raises(ValueError, match="Expected `labelled_batch_size`"):
        SemiSupervisedMNISTDataModule("unused", labelled_batch_size=0)
    with pytest.raises(TypeError, match="Expected `n_labelled`"):
        SemiSupervisedMNISTDataModule("unused", n_labelled="100")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def module(request) -> SemiSupervisedMNISTDataModule:
    from support.paths import require_mnist

    dm = SemiSupervisedMNISTDataModule(
        str(require_mnist()), n_labelled=100, batch_size=32, labelled_batch_size=16, val_size=10000, seed=3
    )
    dm.setup("fit")
    dm.setup("test")
    return dm


def test_the_split_is_balanced_disjoint_and_complete(module: SemiSupervisedMNISTDataModule, mnist_dir: Path) -> None:
    images, labels = load_mnist(mnist_dir, "train")
    x_l, y_l = module.labelled
    assert y_l.bincount(minlength=10).tolist() == [10] * 10
    assert len(module.train_set) == 50000 - 100 and len(module.val_set) == 10000 and len(module.test_set) == 10000
    assert module.labelled_fraction == 100 / 50000
    # The labelled images are training images with their own labels, and none of them is also unlabelled.
    flat = images.flatten(1)
    keys = {bytes(row.numpy()): int(label) for row, label in zip((flat * 255).byte(), labels)}
    for row, label in zip((x_l.flatten(1) * 255).byte(), y_l):
        assert keys[bytes(row.numpy())] == int(label)
    unlabelled = {bytes(row.numpy()) for row in (module.train_set.images.flatten(1) * 255).byte()}
    assert not unlabelled & {bytes(row.numpy()) for row in (x_l.flatten(1) * 255).byte()}


def test_training_batches_hold_unlabelled_then_labelled_examples(module: SemiSupervisedMNISTDataModule) -> None:
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (48, 1, 28, 28)
    assert (y[:32] == UNLABELLED).all() and (y[32:] >= 0).all()
    assert y[32:].unique().numel() > 1
    x_val, y_val = next(iter(module.val_dataloader()))
    assert (y_val >= 0).all() and x_val.shape[0] == 32


def test_batches_resume_exactly_and_differ_per_process(module: SemiSupervisedMNISTDataModule) -> None:
    loader = module.train_dataloader()
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    state = loader.state_dict()
    following = next(it)
    resumed = module.train_dataloader()
    resumed.load_state_dict(state)
    again = next(iter(resumed))
    assert torch.equal(again[0], following[0]) and torch.equal(again[1], following[1])
    assert not torch.equal(first[0][1][32:], first[1][1][32:])  # fresh labelled draws each batch
    # Rank 1 of 2 draws other unlabelled examples and other labelled ones.
    other = module.train_dataloader()
    other.sampler.num_replicas, other.sampler.rank = 2, 1
    other.sampler.num_samples = len(other.sampler.dataset) // 2
    other.sampler.total_size = other.sampler.num_samples * 2
    x1, y1 = next(iter(other))
    assert not torch.equal(x1[:32], first[0][0][:32]) and not torch.equal(y1[32:], first[0][1][32:])
