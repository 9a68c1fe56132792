"""Exact resume through any number of resumes, from checkpoints written at the edges of epochs.

A run is stopped and resumed two and three times, each time from a checkpoint written at an epoch's edge (the end
of the epoch's last training batch, or the end of the epoch) or inside an epoch, and must end with the weights,
optimizer state and loop counters of the run that was never stopped, bit for bit on the CPU, having run every
validation and every epoch's start and end hooks once, in the same order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae.callbacks import ExactResume
from lightning_vae.data import TensorDataModule

BATCHES = 15  # training batches per epoch (60 examples, batch size 4)
EVERY = 5  # every_n_train_steps: steps 15, 30 and 45 end an epoch


class Stopped(Exception):
    """Ends a run as a kill would: at the start of a step, nothing more written."""


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Stopped


class Events(Callback):
    """The validations and epoch starts and ends a run goes through, as (what, epoch, step)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen.append(("epoch start", trainer.current_epoch, trainer.global_step))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seen.append(("epoch end", trainer.current_epoch, trainer.global_step))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.seen.append(("validation", trainer.current_epoch, trainer.global_step))


def _run(folder: Path, bound: str, stop: int | None = None, ckpt: Path | None = None) -> tuple:
    torch.manual_seed(0)  # the same initial weights in every run; ExactResume seeds each step
    vae = tiny_vae()
    events = Events()
    callbacks = [
        ExactResume(seed=0),
        # end of the last batch of an epoch at steps 15, 30, 45
        ModelCheckpoint(dirpath=folder / "steps", filename="{step}", every_n_train_steps=EVERY, save_top_k=-1),
        # end of each epoch (on_train_epoch_end: validation comes before it)
        ModelCheckpoint(dirpath=folder / "epochs", filename="{step}", save_top_k=-1),
        events,
    ]
    if stop is not None:
        callbacks.append(StopAt(stop))
    limits = {"max_epochs": 4} if bound == "max_epochs" else {"max_epochs": -1, "max_steps": 55}
    trainer = Trainer(
        **trainer_kwargs(
            folder,
            limit_train_batches=None,
            limit_val_batches=1,
            num_sanity_val_steps=0,
            enable_checkpointing=True,
            callbacks=callbacks,
            **limits,
        )
    )
    data = torch.rand(4 * BATCHES, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    try:
        trainer.fit(vae, datamodule=TensorDataModule(data, val=data[:8], batch_size=4), ckpt_path=ckpt)
    except Stopped:
        pass
    return vae, trainer, events.seen


@pytest.fixture(scope="module", params=["max_epochs", "max_steps"])
def uninterrupted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    folder = tmp_path_factory.mktemp(request.param)
    vae, trainer, events = _run(folder, request.param)
    return request.param, folder, vae, trainer, events


def _contiguous(part: list, whole: list) -> bool:
    return any(whole[i : i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def _same_checkpoints(a: Path, b: Path) -> None:
    ours, theirs = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for key in ("epoch", "global_step", "loops"):
        assert ours[key] == theirs[key], f"{key} of {a.name} differs from the uninterrupted run's"
    for name, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], value), f"{name} of {a.name} differs"
    for ours_state, their_state in zip(ours["optimizer_states"][0]["state"].values(),
                                       theirs["optimizer_states"][0]["state"].values()):  # fmt: skip
        assert all(torch.equal(ours_state[k], their_state[k]) for k in their_state)


# (stop, resume from) pairs: each resume starts from a checkpoint written at an epoch's edge or inside an epoch
CHAINS = {
    "two resumes, last-batch edges": [(17, None), (32, "steps/step=15.ckpt"), (None, "steps/step=30.ckpt")],
    "three resumes, last-batch edges": [
        (17, None), (33, "steps/step=15.ckpt"), (47, "steps/step=30.ckpt"), (None, "steps/step=45.ckpt"),
    ],
    "three resumes, epoch-end edges": [
        (17, None), (32, "epochs/step=15.ckpt"), (46, "epochs/step=30.ckpt"), (None, "epochs/step=45.ckpt"),
    ],
    "three resumes, mixed": [
        (21, None), (36, "steps/step=20.ckpt"), (52, "epochs/step=30.ckpt"), (None, "steps/step=45.ckpt"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("chain", list(CHAINS), ids=list(CHAINS))
def test_resumes_across_epoch_edges_are_bit_identical(uninterrupted: tuple, tmp_path: Path, chain: str) -> None:
    bound, full_folder, full_vae, full_trainer, full_events = uninterrupted
    for stop, resume in CHAINS[chain]:
        vae, trainer, events = _run(tmp_path, bound, stop, None if resume is None else tmp_path / resume)
        assert _contiguous(events, full_events), f"resumed from {resume}: {events} is not a part of {full_events}"
    assert trainer.global_step == full_trainer.global_step and trainer.current_epoch == full_trainer.current_epoch
    assert events[-1] == full_events[-1]
    for name, value in full_vae.state_dict().items():
        assert torch.equal(vae.state_dict()[name], value), f"{name} differs from the uninterrupted run's"
    # every checkpoint the resumed runs wrote after the last resume equals the uninterrupted run's of that step
    last_resume = int(CHAINS[chain][-1][1].split("=")[1].split(".")[0])
    for folder in ("steps", "epochs"):
        for path in sorted((full_folder / folder).glob("step=*.ckpt")):
            if int(path.stem.split("=")[1]) > last_resume:
                _same_checkpoints(tmp_path / folder / path.name, path)
