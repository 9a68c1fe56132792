"""A NaN on one DDP rank only: the skip policy and aggressive encoder training stay in step on every rank.

Two gloo processes (``ddp_spawn``) on the CPU, a tiny model and a few batches. Rank 1's second batch holds a NaN,
rank 0's does not. Lightning refuses a ``None`` from ``training_step`` under distributed training, and a decision
taken on one rank's own loss leaves the other rank waiting in a collective that never comes: both must fail here
if the decision is not the same on every rank.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy
from support.faults import RecordEncoder, RecordSteps, nan_on_one_rank, same_state
from support.modules import DestroyProcessGroupAtExit, tiny_vae, trainer_kwargs

from lightning_vae.callbacks import AggressiveEncoderTraining

#: A collective that one rank never joins fails after this long instead of gloo's 30 minutes.
TIMEOUT = timedelta(seconds=60)


def _strategy() -> DDPStrategy:
    return DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=TIMEOUT)


def test_skip_policy_with_a_nan_on_one_rank_skips_the_step_on_both(tmp_path: Path) -> None:
    dump = str(tmp_path / "steps")
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=4, limit_val_batches=0, devices=2),
        strategy=_strategy(),
        callbacks=[RecordSteps(dump), DestroyProcessGroupAtExit()],
    )
    trainer.fit(tiny_vae(on_nonfinite="skip"), datamodule=nan_on_one_rank())  # (warnings stay in the workers)
    ranks = [torch.load(f"{dump}.rank{r}", weights_only=False) for r in range(2)]
    for rank in ranks:
        assert rank["steps"] == 4 and rank["skipped"] == 1  # the step of rank 1's NaN, skipped on rank 0 too
        assert same_state(rank["before"][1], rank["after"][1]), "step 1 changed parameters or optimizer state"
        assert not same_state(rank["before"][2], rank["after"][2])  # the steps after it train
    for name, value in ranks[0]["state_dict"].items():
        assert torch.isfinite(value).all() and torch.equal(ranks[1]["state_dict"][name], value), name


def test_aggressive_training_with_a_nan_on_one_rank_keeps_the_ranks_together(tmp_path: Path) -> None:
    dump = str(tmp_path / "encoder")
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0, devices=2),
        strategy=_strategy(),
        callbacks=[
            AggressiveEncoderTraining(max_inner_steps=4, check_every=2, mi_batches=1),
            RecordEncoder(dump),
            DestroyProcessGroupAtExit(),
        ],
    )
    trainer.fit(tiny_vae(on_nonfinite="skip"), datamodule=nan_on_one_rank(n=24))
    ranks = [torch.load(f"{dump}.rank{r}", weights_only=False) for r in range(2)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3
    assert ranks[0]["inner_steps"] == ranks[1]["inner_steps"]  # the same stopping decisions on both ranks
    for name, value in ranks[0]["encoder"].items():
        assert torch.isfinite(value).all() and torch.equal(ranks[1]["encoder"][name], value), name
