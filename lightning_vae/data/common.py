"""DataLoader construction shared by the data modules, including the evaluation sampler for DDP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


def make_loader(
    dataset: Dataset | None,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    evaluation: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset``; evaluation loaders visit every example exactly once under DDP.

    Lightning's default ``DistributedSampler`` pads the data with repeated examples so that every rank
    gets the same number, which biases validation means. For evaluation loaders, when a process group
    is running, this uses Lightning's ``UnrepeatedDistributedSampler`` instead: ranks get uneven shards
    with no repeats, and the module's torchmetrics states (weighted by batch size) then reduce to
    exactly the one-process value. A training loader with ``shuffle=False`` keeps its order under DDP
    too (rank r takes examples r, r + W, ...). Lightning keeps a ``DistributedSampler`` it is given.

    Raises:
        RuntimeError: If ``dataset`` is ``None`` (``setup()`` was not called).
    """
    if dataset is None:
        raise RuntimeError("Call `setup()` before asking for a dataloader")
    sampler: Sampler | None = None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if evaluation:
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)  # type: ignore[arg-type]
        elif not shuffle:
            # Lightning would inject a shuffling DistributedSampler into any training loader; keep the order asked for.
            sampler = DistributedSampler(dataset, shuffle=False)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
    )
