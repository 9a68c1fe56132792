"""DCI, SAP, FactorVAE and β-VAE scores: two gloo processes, each updating with its share of the batches, give the
numbers of one process on all of them (the states are concatenations)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from support.disentanglement import ToySource, toy_encode

from lightning_vae.functional.interventional import fixed_factor_groups, pair_groups, sample_codes
from lightning_vae.metrics import DCI, BetaVAEScore, FactorVAEScore, SAPScore

WORLD = 2
N_BATCHES = 5  # uneven: rank 0 gets batches 0, 2, 4 and rank 1 batches 1, 3


def _batches() -> list[dict]:
    """Every batch the metrics see, the same in each process: codes of a toy source's draws."""
    source, rs = ToySource(), np.random.RandomState(0)
    batches = []
    for b in range(N_BATCHES):
        split = "test" if b == N_BATCHES - 1 else "train"
        codes, factors = sample_codes(source, toy_encode, 40, rs)
        variance_codes = torch.from_numpy(sample_codes(source, toy_encode, 60, rs)[0])
        fixed, groups = fixed_factor_groups(source, 12, 8, rs)
        labels, pairs = pair_groups(source, 12, 8, rs)

        def encode(f):
            return toy_encode(source.render(f.reshape(-1, 3))).view(*f.shape[:-1], -1)

        batches.append(
            {
                "codes": torch.from_numpy(codes),
                "factors": torch.from_numpy(factors),
                "split": split,
                "variance_codes": variance_codes,
                "groups": encode(groups),
                "fixed": torch.from_numpy(fixed),
                "pairs": encode(pairs),
                "labels": torch.from_numpy(labels),
                "group_split": "eval" if b % 2 == 1 and b > 2 else "train",
            }
        )
    return batches


def _compute(batch_ids: list[int]) -> dict[str, torch.Tensor]:
    batches = _batches()
    dci, sap = DCI(importance="lasso"), SAPScore()
    factor_vae, beta_vae = FactorVAEScore(n_factors=3), BetaVAEScore()
    for b in batch_ids:
        d = batches[b]
        dci.update(d["codes"], d["factors"], split=d["split"])
        sap.update(d["codes"], d["factors"], split=d["split"])
        factor_vae.update(d["variance_codes"])
        factor_vae.update(d["groups"], d["fixed"], split=d["group_split"])
        beta_vae.update(d["pairs"][:, 0], d["pairs"][:, 1], d["labels"], split=d["group_split"])
    out = {f"dci/{k}": v for k, v in dci.compute().items()}
    out["sap"] = sap.compute()
    out.update({f"factor_vae/{k}": v for k, v in factor_vae.compute().items()})
    out.update({f"beta_vae/{k}": v for k, v in beta_vae.compute().items()})
    return out


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.save(_compute(list(range(rank, N_BATCHES, WORLD))), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_disentanglement_metrics_under_ddp_equal_one_process(tmp_path):
    single = _compute(list(range(N_BATCHES)))
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in single.items():
            # the gathered rows come rank by rank: fits see them in another order (rounding only)
            torch.testing.assert_close(got[name], value, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")
    assert 0.0 < single["factor_vae/eval_accuracy"] <= 1.0 and single["factor_vae/active_dims"] == 4
