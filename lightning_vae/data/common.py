"""What the data modules share: the data of a batch, resumable training loaders, exact evaluation under DDP.

:func:`read_batch` is the one place that finds the data and its context in a batch (a tensor, an ``(x, y, ...)``
sequence or a dict); the module, the callbacks and the metrics all go through it (``VAE.read_batch``).

Training loaders resume mid-epoch. The order of an epoch is a function of ``(seed, epoch)`` alone
(:class:`ResumableSampler`), the loader counts the batches it has handed out and Lightning stores that
count in every checkpoint (:class:`ResumableLoader` keeps ``state_dict``/``load_state_dict``, which
Lightning saves for any loader that has them), so a run resumed from a checkpoint written in the middle
of an epoch sees exactly the batches the interrupted run had still to see. Randomness applied to a batch
(dynamic binarisation) is drawn from a generator keyed by ``(seed, epoch, rank, batch number)``
(:func:`batch_key`), never from the global random state, so it is the same whether or not the run was
interrupted, with or without worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lightning_vae.checks import check_int

#: Dict keys under which :func:`read_batch` looks for the data in a dict batch, in this order.
BATCH_KEYS = ("x", "image", "images", "input", "inputs", "data")

#: Dict keys under which :func:`read_batch` looks for the context (labels, conditioning) of a dict batch.
CONTEXT_KEYS = ("context", "condition", "y", "label", "labels", "target", "targets")


class Batch(NamedTuple):
    """What a model sees of a batch: the data and its context.

    Attributes:
        x: The data, ``(B, *data_shape)``.
        context: What the model is conditioned on (class labels, a tensor of features), or ``None``. Only a model
            that declares ``conditional = True`` receives it; every other model sees ``x`` alone.
    """

    x: Tensor
    context: Tensor | None = None


def read_batch(batch: Any) -> Batch:
    """The data and context of a batch given as a tensor, an ``(x, y, ...)`` sequence, a dict or a :class:`Batch`.

    The data: the tensor itself, the first element of a sequence, or the first of :data:`BATCH_KEYS` a dict holds a
    tensor under. The context: the second element of a sequence when it is a tensor, or the first of
    :data:`CONTEXT_KEYS` a dict holds a tensor under; else ``None``. To read batches of another layout, override
    ``VAE.read_batch`` (the one place the module, its callbacks and its metrics read batches through).

    Raises:
        TypeError: If ``batch`` is none of these (or a sequence that does not start with a tensor).
        ValueError: If a dict batch has no tensor under any of :data:`BATCH_KEYS`.

    Example::

        >>> x, y = torch.zeros(2, 3), torch.tensor([1, 0])
        >>> read_batch(x).x is x, read_batch((x, y)).context is y, read_batch({"image": x, "label": y}).context is y
        (True, True, True)
        >>> read_batch({"label": x})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected a dict batch to hold the data under one of ('x', 'image', ...), got keys ['label']
    """
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, Tensor):
        return Batch(batch)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        context = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return Batch(batch[0], context)
    if isinstance(batch, Mapping):
        x = next((batch[key] for key in BATCH_KEYS if isinstance(batch.get(key), Tensor)), None)
        if x is None:
            raise ValueError(
                f"Expected a dict batch to hold the data under one of {BATCH_KEYS}, got keys {sorted(map(str, batch))}"
            )
        return Batch(x, next((batch[key] for key in CONTEXT_KEYS if isinstance(batch.get(key), Tensor)), None))
    raise TypeError(
        f"Expected a batch that is a tensor, a tuple/list starting with a tensor, or a dict, got {type(batch).__name__}"
    )


def check_loader_args(batch_size: Any, num_workers: Any, seed: Any) -> tuple[int, int, int]:
    """The loader arguments every data module takes, checked: ``(batch_size >= 1, num_workers >= 0, seed)``.

    Raises:
        TypeError: For a value that is not an int.
        ValueError: For a batch size below 1 or a negative number of workers.

    Example::

        >>> check_loader_args(32, 0, 7)
        (32, 0, 7)
    """
    return (
        check_int("batch_size", batch_size, low=1),
        check_int("num_workers", num_workers, low=0),
        check_int("seed", seed),
    )


def batch_key(seed: int, epoch: int, rank: int, batch: int) -> int:
    """A 63-bit seed for the random draws of one batch, the same in every run and process that asks.

    Example::

        >>> batch_key(0, 1, 0, 5) == batch_key(0, 1, 0, 5), batch_key(0, 1, 0, 5) != batch_key(0, 1, 0, 6)
        (True, True)
    """
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + rank * 0x94D049BB133111EB + batch) & (2**64 - 1)
    # splitmix64 finaliser: neighbouring keys give unrelated seeds
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (value ^ (value >> 31)) & (2**63 - 1)


class ResumableSampler(DistributedSampler):
    """The order of a training epoch as a function of ``(seed, epoch)``, able to start mid-epoch.

    A ``DistributedSampler`` (so Lightning keeps it under DDP instead of injecting its own), for one
    process or for this rank of a process group. With ``batch_size`` given, it yields ``(index, key)``
    pairs where ``key`` (:func:`batch_key`) seeds the random draws of the batch the index falls in.

    Args:
        dataset: The training set.
        shuffle: Shuffle each epoch (``torch.randperm`` seeded with ``seed + epoch``).
        seed: Seed of the order (and of the batch keys).
        batch_size: Batch size of the loader, to yield keyed indices; ``None`` yields plain indices.

    Example::

        >>> sampler = ResumableSampler(range(6), shuffle=True, seed=0)
        >>> full = list(sampler)
        >>> sampler.start = 4  # resume after 4 examples: the same epoch's last two
        >>> list(sampler) == full[4:]
        True
    """

    def __init__(self, dataset: Any, *, shuffle: bool, seed: int = 0, batch_size: int | None = None) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=shuffle,
            seed=seed,
        )
        self.batch_size = batch_size
        #: Position in this epoch's order to start from, used once by the next iteration (set on resume).
        self.start = 0
        #: The epoch ``start`` belongs to (``None``: whichever comes next); an iteration of another epoch starts at 0.
        self.start_epoch: int | None = None

    def pending_start(self) -> int:
        """Where the next iteration starts: ``start``, unless it was set for another epoch than this one."""
        return self.start if self.start_epoch is None or self.start_epoch == self.epoch else 0

    def __iter__(self) -> Iterator[Any]:
        start, self.start, self.start_epoch = self.pending_start(), 0, None
        indices = list(super().__iter__())[start:]
        if self.batch_size is None:
            return iter(indices)
        size = self.batch_size
        return iter(
            (index, batch_key(self.seed, self.epoch, self.rank, (start + i) // size)) for i, index in enumerate(indices)
        )


class KeyedDataset(Dataset):
    """Wraps a dataset so that ``dataset[(index, key)]`` returns the example with ``key`` appended."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Any, ...]:
        index, key = item
        example = self.dataset[index]
        return (*example, key) if isinstance(example, tuple) else (example, key)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` whose position Lightning checkpoints.

    ``state_dict()`` holds the epoch and the number of batches handed out in it; ``load_state_dict``
    makes the next iteration start at the following batch (or at the next epoch when the saved one
    was complete). Lightning calls both for every training loader that has them.
    """

    sampler: ResumableSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_seen = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.batches_seen = self.sampler.pending_start() // (self.batch_size or 1)
        for batch in super().__iter__():
            self.batches_seen += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches", "seed"}``: where the loader is in the run."""
        return {"epoch": self.sampler.epoch, "batches": self.batches_seen, "seed": self.sampler.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the ``state["batches"]``-th batch of epoch ``state["epoch"]``.

        After the last batch, the next iteration starts the next epoch; with ``state["finish_epoch"]`` (set by
        :func:`~lightning_vae.callbacks.exact_resume.resume_before_epoch_end`) it yields nothing, ending the
        saved epoch, and the one after it starts the next.

        Raises:
            ValueError: If the state was written with another seed (the order would differ).
        """
        if int(state.get("seed", self.sampler.seed)) != self.sampler.seed:
            raise ValueError(
                f"Expected the checkpoint's data order seed {state['seed']} to equal the data module's seed "
                f"{self.sampler.seed}; resume with the same data settings"
            )
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self) and not state.get("finish_epoch", False):
            self.sampler.set_epoch(epoch + 1)
            self.sampler.start = 0
        else:
            self.sampler.set_epoch(epoch)
            self.sampler.start = batches * (self.batch_size or 1)
            self.sampler.start_epoch = epoch


def make_loader(
    dataset: Dataset | None,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    evaluation: bool = False,
    seed: int = 0,
    keyed: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset``; evaluation loaders visit every example exactly once under DDP.

    Lightning's default ``DistributedSampler`` pads the data with repeated examples so that every rank
    gets the same number, which biases validation means. For evaluation loaders, when a process group
    is running, this uses Lightning's ``UnrepeatedDistributedSampler`` instead: ranks get uneven shards
    with no repeats, and the module's torchmetrics states (weighted by batch size) then reduce to
    exactly the one-process value.

    Training loaders (``evaluation=False``) are :class:`ResumableLoader` over a :class:`ResumableSampler`
    seeded with ``seed``: resumable mid-epoch, with the order asked for (``shuffle=False`` keeps it,
    rank r taking examples r, r + W, ... under DDP). With ``keyed=True`` each example comes with its
    batch's key appended (see :func:`batch_key`), for a ``collate_fn`` that draws per-batch randomness.

    Raises:
        RuntimeError: If ``dataset`` is ``None`` (``setup()`` was not called).
    """
    if dataset is None:
        raise RuntimeError("Call `setup()` before asking for a dataloader")
    if not evaluation:
        train_sampler = ResumableSampler(dataset, shuffle=shuffle, seed=seed, batch_size=batch_size if keyed else None)
        return ResumableLoader(
            KeyedDataset(dataset) if keyed else dataset,
            batch_size=batch_size,
            sampler=train_sampler,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            collate_fn=collate_fn,
            pin_memory=torch.cuda.is_available(),
        )
    sampler: Sampler | None = None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),  # page-locked batches: faster, asynchronous copies to the GPU
    )


class TrainValDataModule(LightningDataModule):
    """A data module with a training set and a validation set that also serves test and predict.

    Subclasses set :attr:`train_set` and :attr:`val_set` in ``setup`` and ``batch_size``, ``num_workers`` and
    ``seed`` in ``__init__`` (:func:`check_loader_args`); :attr:`shuffle` says whether training batches are
    shuffled. The loaders come from :func:`make_loader`: resumable for training, exact under DDP for the rest.
    """

    batch_size: int
    num_workers: int
    seed: int
    #: Shuffle the training data each epoch.
    shuffle: bool = True
    train_set: Dataset | None = None
    val_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, training: bool) -> DataLoader:
        return make_loader(
            dataset,
            self.batch_size,
            shuffle=self.shuffle and training,
            num_workers=self.num_workers,
            evaluation=not training,
            seed=self.seed,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, training=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, training=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, training=False)
