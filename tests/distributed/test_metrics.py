"""Two gloo processes with uneven shards give the numbers of one process on the whole set (torchmetrics-style)."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_vae import VAE
from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.functional.collapse import kl_to_standard_normal
from lightning_vae.metrics import (
    ActiveUnits,
    CollapsedDimensions,
    ImportanceWeightedNLL,
    KLPerDimension,
    MutualInformation,
    MutualInformationGap,
    PosteriorMeanVariance,
)
from lightning_vae.nets import MLPDecoder, MLPEncoder

BATCH_SIZES = (32, 32, 32, 32, 22)  # 150 examples: rank 0 gets batches 0, 2, 4 (86 examples), rank 1 gets 1, 3 (64)
WORLD = 2


def _model() -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(16,)), MLPDecoder(3, (1, 4, 4), hidden_sizes=(16,)))


def _batch(b: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + b)
    n = BATCH_SIZES[b]
    scale = torch.tensor([0.0, 0.02, 0.5, 1.0])
    loc = torch.randn(n, 4, generator=g) * scale + b * 0.05 * scale
    log_var = torch.randn(n, 4, generator=g) * 0.2 - 1.5
    log_var[:, 0] = 0.01 * torch.randn(n, generator=g)  # dimension 0 is the prior: collapsed
    return {
        "loc": loc,
        "log_var": log_var,
        "z": loc + torch.exp(0.5 * log_var) * torch.randn(n, 4, generator=g),
        "x": torch.bernoulli(torch.rand(n, 1, 4, 4, generator=g), generator=g),
        "factors": torch.randint(0, 4, (n, 2), generator=g),
    }


def _compute(batch_ids: list[int]) -> dict[str, torch.Tensor]:
    model = _model()
    metrics = {
        "kl": KLPerDimension(),
        "collapsed": CollapsedDimensions(threshold=0.05),
        "variance": PosteriorMeanVariance(),
        "au": ActiveUnits(),
        "mi": MutualInformation(),
        "nll": ImportanceWeightedNLL(n_samples=16, chunk_size=100),
        "mig": MutualInformationGap(n_bins=5),
    }
    for b in batch_ids:
        d = _batch(b)
        kl = kl_to_standard_normal(d["loc"], d["log_var"].exp())
        metrics["kl"].update(kl)
        metrics["collapsed"].update(kl.mean(0), batch_size=kl.shape[0])
        metrics["variance"].update(d["loc"])
        metrics["au"].update(d["loc"])
        metrics["mi"].update(DiagonalGaussian(d["loc"], d["log_var"]), d["z"])
        torch.manual_seed(1000 + b)  # the same importance samples for this batch on any process
        metrics["nll"].update(model, d["x"])
        metrics["mig"].update(d["loc"], d["factors"])
    return {name: m.compute() for name, m in metrics.items()}


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = _compute(list(range(rank, len(BATCH_SIZES), WORLD)))
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_under_ddp_equal_one_process(tmp_path):
    single = _compute(list(range(len(BATCH_SIZES))))
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in single.items():
            torch.testing.assert_close(
                got[name], value, rtol=1e-6, atol=1e-9, msg=lambda m, n=name, r=rank: f"{n} rank {r}: {m}"
            )
    assert int(single["au"]) == 2  # the set is not trivial: some units active, some not
    assert 0 < int(single["collapsed"]) < 4
