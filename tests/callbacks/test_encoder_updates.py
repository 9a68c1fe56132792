"""The inner loop's fresh batches: a shuffled loader like the training loader (workers, pinned memory, batch keys)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_vae.callbacks.encoder_updates import fresh_loader


def test_the_fresh_batch_loader_has_the_workers_and_pinned_memory_of_the_training_loader():
    main = DataLoader(
        TensorDataset(torch.rand(12, 2)), batch_size=4, num_workers=2, pin_memory=True, persistent_workers=True
    )
    fresh = fresh_loader(SimpleNamespace(train_dataloader=main), seed=1)  # type: ignore[arg-type]
    assert (fresh.num_workers, fresh.pin_memory, fresh.persistent_workers, fresh.batch_size) == (2, True, True, 4)
    once = fresh_loader(SimpleNamespace(train_dataloader=main), seed=1, persistent=False)  # type: ignore[arg-type]
    assert once.num_workers == 2 and not once.persistent_workers


def test_fresh_batches_from_a_keyed_training_set(mnist_dir):
    """MNIST with dynamic binarisation asks for (index, batch key) pairs: the fresh batches come binarised."""
    from lightning_vae.data import MNISTDataModule

    dm = MNISTDataModule(str(mnist_dir), batch_size=8, val_size=16, train_subset=32, binarize="dynamic")
    dm.setup("fit")
    fresh = fresh_loader(SimpleNamespace(train_dataloader=dm.train_dataloader()), seed=3)  # type: ignore[arg-type]
    batches = list(fresh)
    assert len(batches) == 4 and batches[0][0].shape == (8, 1, 28, 28)
    assert set(torch.cat([b[0] for b in batches]).unique().tolist()) == {0.0, 1.0}
    again = list(fresh)  # a new pass: another order and other draws
    assert not torch.equal(torch.cat([b[1] for b in batches]), torch.cat([b[1] for b in again]))


def test_the_fresh_batches_need_one_loader_over_a_map_style_dataset():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(torch.zeros(4, 2))

    for loader in (DataLoader(Stream(), batch_size=2), [DataLoader(TensorDataset(torch.zeros(4, 2)))]):
        with pytest.raises(TypeError, match="needs a single DataLoader over a map-style dataset"):
            fresh_loader(SimpleNamespace(train_dataloader=loader), seed=0)  # type: ignore[arg-type]
