"""The helpers of utilities.py, and the private Lightning attributes they read (a test that fails when they change)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from support.modules import tiny_vae, trainer_kwargs
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae.utilities import logging_step


class RecordSteps(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            # The attribute logging_step reads; renamed in a Lightning release, this fails here first.
            assert isinstance(trainer.fit_loop.epoch_loop._batches_that_stepped, int)
            self.steps.append(logging_step(trainer))


def test_logging_step_is_the_step_lightning_writes_validation_scalars_at(tmp_path: Path) -> None:
    x = torch.rand(24, 1, 8, 8).round()
    record = RecordSteps()
    logger = CSVLogger(tmp_path, name="run")
    trainer = Trainer(
        **trainer_kwargs(tmp_path, logger=logger, callbacks=[record], limit_train_batches=3, max_epochs=3)
    )
    trainer.fit(tiny_vae(), DataLoader(TensorDataset(x), batch_size=4), DataLoader(TensorDataset(x), batch_size=4))
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/loss")]
    written = [int(row["step"]) for row in rows]
    assert written == record.steps == [2, 5, 8]  # three optimizer steps per epoch, each check written one step back
    assert trainer.global_step == 9
