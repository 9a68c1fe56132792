"""PosteriorCollapseMonitor on a two-group model: two DDP processes give every per-group number of one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from support.modules import DestroyProcessGroupAtExit, DeterministicStacked, trainer_kwargs
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.callbacks import PosteriorCollapseMonitor

BATCHES = (8, 8, 8, 5)  # rank 0 takes batches 0 and 2, rank 1 batches 1 and 3: uneven shards


class FixedBatches(LightningDataModule):
    """The same validation batches however many processes: rank r takes batches r, r + W, ... (no padding)."""

    def val_dataloader(self) -> DataLoader:
        images = torch.rand(sum(BATCHES), 1, 4, 4, generator=torch.Generator().manual_seed(1)).round()
        bounds = torch.tensor((0, *BATCHES)).cumsum(0).tolist()
        batches = [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(TensorDataset(images), batch_sampler=batches[rank::world])


class _Dump(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module) -> None:
        monitor = next(c for c in trainer.callbacks if isinstance(c, PosteriorCollapseMonitor))
        torch.save({"last": monitor.last, "history": monitor.history}, f"{self.path}.rank{trainer.global_rank}")


def _validate(tmp_path: Path, devices: int) -> tuple[dict[str, float], dict]:
    seed_everything(0)
    vae = VAE(model=DeterministicStacked((1, 4, 4), latent_sizes=(4, 2), hidden_sizes=((8,), (8,))))
    # Thresholds within the spread of this model's values (measured: posterior-mean variances 0.0015 to 0.028,
    # KLs 0.027 to 0.44), so that the per-group counts are neither 0 nor all.
    monitor = PosteriorCollapseMonitor(activity_threshold=0.016, kl_threshold=0.1, iw_samples=3)
    extra = {"strategy": "ddp_spawn", "devices": 2} if devices == 2 else {}
    dump = str(tmp_path / f"dump{devices}")
    trainer = Trainer(
        **trainer_kwargs(tmp_path, limit_val_batches=None, use_distributed_sampler=False, **extra),
        callbacks=[monitor, _Dump(dump), DestroyProcessGroupAtExit()],
    )
    metrics = trainer.validate(vae, datamodule=FixedBatches(), verbose=False)[0]
    return {k: float(v) for k, v in metrics.items() if k.startswith("collapse/")}, torch.load(f"{dump}.rank0")


def test_per_group_collapse_metrics_under_ddp_match_one_process(tmp_path: Path) -> None:
    one, dump_one = _validate(tmp_path, devices=1)
    two, dump_two = _validate(tmp_path, devices=2)
    keys = ("active_units", "mutual_info", "collapsed_dims")
    expected = {f"collapse/{g}/{k}" for g in ("z2", "z1") for k in keys} | {f"collapse/{k}" for k in keys}
    assert set(one) == set(two) == expected | {"collapse/nll_iw"}
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
    assert (one["collapse/z1/active_units"], one["collapse/z2/collapsed_dims"], one["collapse/z1/collapsed_dims"]) == (
        2,
        1,
        2,
    )
    assert dump_two["last"] == pytest.approx(dump_one["last"], rel=1e-6)
    assert torch.load(str(tmp_path / "dump2") + ".rank1")["last"] == dump_two["last"]  # every rank computed them
