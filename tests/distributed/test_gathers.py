"""Every gather across processes under 3 gloo processes with shards of unequal sizes (N not divisible by 3).

``strategy.all_gather`` (``torch.distributed.all_gather``) needs a tensor of one shape on every rank:
under NCCL other shapes hang or return garbage, under gloo they fail. ``PosteriorMeanWriter`` gathers
a description of each rank's rows first, pads to the largest shard and cuts back; the torchmetrics
states of the package (``cat`` lists and sums) are padded by torchmetrics. The tests check the results
against one process over the whole set and that every ``all_gather`` call had the same shape on all
ranks.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.fabric.utilities.distributed import _all_gather_ddp_if_available
from lightning.pytorch import Trainer
from support.modules import DestroyProcessGroupAtExit, DeterministicEncoder, PlainDecoder, trainer_kwargs
from torchmetrics import MeanMetric

from lightning_vae import VAE
from lightning_vae.callbacks import PosteriorMeanWriter
from lightning_vae.callbacks.latents import _gather_predictions
from lightning_vae.data import TensorDataModule
from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.functional.collapse import kl_to_standard_normal
from lightning_vae.metrics import (
    ActiveUnits,
    CollapsedDimensions,
    KLPerDimension,
    MutualInformation,
    MutualInformationGap,
    PosteriorMeanVariance,
)

WORLD = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- the writer
def _rows(n: int, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The rows rank ``rank`` predicts of ``n`` examples, as an unrepeated sampler shards them (r, r + 3, ...)."""
    indices = torch.arange(rank, n, WORLD)
    if indices.numel() == 0:
        return None
    values = torch.stack([indices.float(), -indices.float()], 1)  # (n_rank, 2): row i is (i, -i)
    return values, indices * 10, indices


def _case(name: str, rank: int) -> tuple[Any, Any, Any]:
    n = {"uneven": 10, "empty_rank": 2, "labels_missing": 7, "indices_missing": 5}[name]
    rows = _rows(n, rank)
    if rows is None:
        return None, None, None
    values, labels, indices = rows
    if name == "labels_missing" and rank == 1:
        labels = None
    if name == "indices_missing" and rank == 2:
        indices = None
    return values, labels, indices


CASES = ("uneven", "empty_rank", "labels_missing", "indices_missing")


class _Strategy:
    """What ``_gather_predictions`` uses of a Lightning strategy; the gather is ``DDPStrategy.all_gather``'s."""

    root_device = torch.device("cpu")

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(tensor.shape))
        return _all_gather_ddp_if_available(tensor)


# ---------------------------------------------------------------------------------------------- metrics
def _batches() -> list[dict[str, torch.Tensor]]:
    """10 examples in 6 batches of 2, 2, 2, 2, 1, 1 (rank r takes batches r, r + 3)."""
    g = torch.Generator().manual_seed(7)
    sizes = (2, 2, 2, 2, 1, 1)
    batches = []
    for n in sizes:
        loc = torch.randn(n, 3, generator=g) * torch.tensor([0.0, 0.5, 2.0])
        log_var = torch.randn(n, 3, generator=g) * 0.3 - 1.0
        batches.append(
            {
                "loc": loc,
                "log_var": log_var,
                "z": loc + torch.randn(n, 3, generator=g) * torch.exp(0.5 * log_var),
                "factors": torch.randint(0, 3, (n, 2), generator=g),
                "loss": torch.randn(n, generator=g),
            }
        )
    return batches


def _metrics(batch_ids: list[int]) -> dict[str, torch.Tensor]:
    metrics: dict[str, Any] = {
        "kl": KLPerDimension(),
        "collapsed": CollapsedDimensions(threshold=0.05),
        "variance": PosteriorMeanVariance(),
        "active": ActiveUnits(),
        "mi": MutualInformation(),
        "mig": MutualInformationGap(n_bins=3),
        "mean": MeanMetric(nan_strategy="disable"),
    }
    batches = _batches()
    for b in batch_ids:
        d = batches[b]
        kl = kl_to_standard_normal(d["loc"], d["log_var"].exp())
        metrics["kl"].update(kl)
        metrics["collapsed"].update(kl.mean(0), batch_size=kl.shape[0])
        metrics["variance"].update(d["loc"])
        metrics["active"].update(d["loc"])
        metrics["mi"].update(DiagonalGaussian(d["loc"], d["log_var"]), d["z"])
        metrics["mig"].update(d["loc"].double(), d["factors"])
        # as VAE's evaluation means: the batch mean once per example
        metrics["mean"].update(d["loss"].mean().reshape(1).expand(d["loss"].shape[0]))
    return {name: m.compute() for name, m in metrics.items()}


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        strategy = _Strategy()
        results: dict[str, Any] = {}
        for name in CASES:
            try:
                results[name] = _gather_predictions(strategy, *_case(name, rank))
            except RuntimeError as err:
                results[name] = str(err)
        shapes: list[Any] = [None] * WORLD
        dist.all_gather_object(shapes, strategy.shapes)
        results["shapes"] = shapes
        results["metrics"] = _metrics(list(range(rank, 6, WORLD)))
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathers_under_three_processes_with_uneven_shards(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    single = _metrics(list(range(6)))
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        # every all_gather call had one shape on all ranks
        assert got["shapes"][0] == got["shapes"][1] == got["shapes"][2]
        for name in ("uneven", "empty_rank"):
            values, labels, indices = got[name]
            n = {"uneven": 10, "empty_rank": 2}[name]
            order = torch.cat([torch.arange(r, n, WORLD) for r in range(WORLD)])  # rank order
            torch.testing.assert_close(indices, order)
            torch.testing.assert_close(values, torch.stack([order.float(), -order.float()], 1))
            torch.testing.assert_close(labels, order * 10)
        values, labels, indices = got["labels_missing"]
        assert labels is None and values.shape == (7, 2) and sorted(indices.tolist()) == list(range(7))
        assert "needs the dataset indices" in got["indices_missing"]  # on every rank alike: nobody is left waiting
        for name, value in single.items():
            torch.testing.assert_close(got["metrics"][name], value, rtol=1e-6, atol=1e-9, msg=f"{name} rank {rank}")


# ---------------------------------------------------------------------------------------------- end to end
N_PREDICT = 10


def _predict(tmp_path: Path, devices: int) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    data = torch.rand(N_PREDICT, 1, 8, 8).round()
    labels = torch.arange(N_PREDICT) * 10
    dm = TensorDataModule(data, val=data, batch_size=3)
    dm.setup("predict")
    dm.val_set = torch.utils.data.TensorDataset(data, labels)  # (x, y) batches: labels written beside
    vae = VAE(DeterministicEncoder(), PlainDecoder(), likelihood="bernoulli")
    writer = PosteriorMeanWriter(tmp_path / f"latents{devices}.npy")
    extra = {"strategy": "ddp_spawn", "devices": devices} if devices > 1 else {}
    trainer = Trainer(**trainer_kwargs(tmp_path, **extra), callbacks=[writer, DestroyProcessGroupAtExit()])
    trainer.predict(vae, datamodule=dm, return_predictions=False)
    return np.load(writer.output_path), np.load(writer.labels_path)


@pytest.mark.slow
def test_posterior_mean_writer_under_three_processes_matches_one(tmp_path: Path) -> None:
    """10 examples over 3 ranks (4, 3, 3 rows in batches of 3, 3 + 1...): the file of one process, in dataset order."""
    one, labels_one = _predict(tmp_path, 1)
    three, labels_three = _predict(tmp_path, 3)
    assert one.shape == three.shape == (N_PREDICT, 4)
    np.testing.assert_allclose(three, one, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(labels_three, labels_one)
    np.testing.assert_array_equal(labels_one, np.arange(N_PREDICT) * 10)
