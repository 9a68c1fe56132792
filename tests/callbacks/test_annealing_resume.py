"""Restart safety: a run stopped mid-cycle and resumed with ``ckpt_path=`` logs the same β and λ as a straight run,
and under DDP every rank uses the same β at every step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch import Callback, Trainer
from support.annealing import MemoryLogger, Recorder, UserVAE, binary_images
from support.modules import DestroyProcessGroupAtExit, tiny_vae, trainer_kwargs

from lightning_vae.callbacks import FreeBits, KLAnnealing, TargetRate
from lightning_vae.data import TensorDataModule

STEPS, BATCHES_PER_EPOCH = 20, 6


def _callbacks(setup: str) -> list[Callback]:
    if setup == "step":
        # Period 8: the stop at step 9 falls in the rising half of the second cycle, and in the middle of epoch 1.
        return [
            KLAnnealing("cyclical", length=16, n_cycles=2, ratio=0.5),
            FreeBits(1.0, schedule="linear", end=0.0, length=12),
        ]
    # Stops in epoch 1 or after it fall in the middle of both ramps (beta 1/3 then 2/3, lambda 0.375 then 0.125).
    return [
        KLAnnealing("linear", length=3, interval="epoch"),
        FreeBits(0.5, schedule="cosine", end=0.0, length=3, interval="epoch"),
    ]


def _trainer(tmp_path: Path, max_steps: int, callbacks: list[Callback], logger: MemoryLogger) -> Trainer:
    return Trainer(
        **trainer_kwargs(
            tmp_path,
            max_steps=max_steps,
            max_epochs=-1,
            limit_train_batches=BATCHES_PER_EPOCH,
            limit_val_batches=0,
            log_every_n_steps=1,
            logger=logger,
            callbacks=callbacks,
        )
    )


@pytest.mark.parametrize(("setup", "middle"), [("step", 9), ("epoch", 9), ("epoch", 2 * BATCHES_PER_EPOCH)])
def test_resume_mid_cycle_logs_identical_beta_and_lambda(tmp_path: Path, setup: str, middle: int) -> None:
    dm = TensorDataModule(binary_images(256), batch_size=16)

    straight, straight_log = Recorder(), MemoryLogger()
    _trainer(tmp_path / "straight", STEPS, [*_callbacks(setup), straight], straight_log).fit(tiny_vae(), dm)

    first, first_log = Recorder(), MemoryLogger()
    trainer = _trainer(tmp_path / "first", middle, [*_callbacks(setup), first], first_log)
    trainer.fit(tiny_vae(), dm)
    ckpt = tmp_path / "middle.ckpt"
    trainer.save_checkpoint(ckpt)

    # A new process would build everything again: fresh module, fresh callbacks, then ckpt_path=.
    second, second_log = Recorder(), MemoryLogger()
    _trainer(tmp_path / "second", STEPS, [*_callbacks(setup), second], second_log).fit(tiny_vae(), dm, ckpt_path=ckpt)

    assert straight.column("step") == list(range(STEPS))
    assert first.column("step") + second.column("step") == list(range(STEPS))
    for name in ("beta", "free_bits"):
        assert first.column(name) + second.column(name) == straight.column(name), name
    for key in ("train/beta", "train/free_bits"):
        logged = straight_log.series(key)
        assert len(logged) == STEPS
        assert {**first_log.series(key), **second_log.series(key)} == logged, key
    # the schedules really moved across the stop
    assert len(set(straight.column("beta"))) > 2 and len(set(straight.column("free_bits"))) > 2


# ---------------------------------------------------------------- DDP
def _rank_rows(out: Path) -> tuple[list[dict], list[dict]]:
    return json.loads((out / "rank0.json").read_text()), json.loads((out / "rank1.json").read_text())


def _ddp_trainer(tmp_path: Path, callbacks: list[Callback], max_steps: int) -> Trainer:
    return Trainer(
        **trainer_kwargs(
            tmp_path,
            strategy="ddp_spawn",
            devices=2,
            max_steps=max_steps,
            max_epochs=-1,
            limit_train_batches=4,
            limit_val_batches=0,
            callbacks=[*callbacks, DestroyProcessGroupAtExit()],
        )
    )


def test_ddp_ranks_use_the_same_scheduled_beta_and_lambda(tmp_path: Path) -> None:
    out = tmp_path / "records"
    out.mkdir()
    callbacks = [
        KLAnnealing("cyclical", length=8, n_cycles=2, ratio=0.5),
        FreeBits(0.5, schedule="linear", end=0.0, length=4),
        Recorder(str(out)),
    ]
    _ddp_trainer(tmp_path, callbacks, max_steps=10).fit(tiny_vae(), TensorDataModule(binary_images(256), batch_size=16))
    rank0, rank1 = _rank_rows(out)
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == list(range(10))
    assert [r["beta"] for r in rank0] == [r["beta"] for r in rank1] == [0, 0.5, 1, 1, 0, 0.5, 1, 1, 1, 1]
    assert [r["free_bits"] for r in rank0] == [r["free_bits"] for r in rank1] == [0.5, 0.375, 0.25, 0.125] + [0.0] * 6


def test_ddp_target_rate_keeps_every_rank_on_the_same_beta(tmp_path: Path) -> None:
    # Each rank sees its own shard, so the local KLs differ; the controller averages them before deciding.
    out = tmp_path / "records"
    out.mkdir()
    callbacks = [TargetRate(target=4.0, step_size=0.1, tolerance=0.0), Recorder(str(out))]
    dm = TensorDataModule(binary_images(256), batch_size=16)
    _ddp_trainer(tmp_path, callbacks, max_steps=12).fit(UserVAE(log_kl=True), dm)
    rank0, rank1 = _rank_rows(out)
    assert [r["beta"] for r in rank0] == [r["beta"] for r in rank1]
    assert [r["kl"] for r in rank0] != [r["kl"] for r in rank1]
    assert len({r["beta"] for r in rank0}) > 3  # beta moved
