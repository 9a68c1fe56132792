"""Small helpers (utilities.py): whether a step's values reach the loggers (against what a logger receives in a real
run), the data tensor of a batch through the module's own reader or the package's, and the one-read finiteness check
of gradients (against torch.isfinite)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from support.annealing import MemoryLogger
from support.modules import tiny_vae, trainer_kwargs
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae.data import Batch, TensorDataModule
from lightning_vae.utilities import batch_data, grads_finite, logging_step, logs_this_step


def test_logs_this_step_without_a_trainer_that_can_tell_is_true() -> None:
    assert logs_this_step(None) is True
    assert logs_this_step(SimpleNamespace()) is True
    assert logs_this_step(SimpleNamespace(_logger_connector=SimpleNamespace(should_update_logs=False))) is False


def test_logs_this_step_agrees_with_what_the_logger_receives(tmp_path: Path) -> None:
    class Flags(Callback):
        def __init__(self) -> None:
            self.flags: dict[int, bool] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.flags[trainer.global_step] = logs_this_step(trainer)

    flags, logger = Flags(), MemoryLogger()
    kwargs = trainer_kwargs(tmp_path, logger=logger, callbacks=[flags], max_epochs=1, limit_train_batches=10)
    trainer = Trainer(**{**kwargs, "log_every_n_steps": 3, "limit_val_batches": 0})
    x = torch.rand(40, 1, 8, 8).round()
    trainer.fit(tiny_vae(), datamodule=TensorDataModule(x, val=x[:4], batch_size=4))  # 10 training batches
    logged = {step for step, metrics in logger.steps.items() if "train/loss" in metrics}
    assert logged and logged == {step for step, flag in flags.flags.items() if flag}
    assert len(flags.flags) == 10 and len(logged) < 10


def test_batch_data_reads_a_tensor_a_sequence_a_dict_or_a_batch() -> None:
    x, y = torch.zeros(2, 3), torch.ones(2)
    module = object()  # no reader of its own: the package's
    assert batch_data(module, x) is x
    assert batch_data(module, (x, y)) is x and batch_data(module, [x]) is x
    assert batch_data(module, {"label": y, "image": x}) is x
    assert batch_data(module, Batch(x, y)) is x


def test_batch_data_uses_the_modules_own_reader() -> None:
    x = torch.zeros(2, 3)
    module = SimpleNamespace(read_batch=lambda batch: Batch(batch["pixels"]))
    assert batch_data(module, {"pixels": x}) is x


def test_batches_without_data_are_refused_or_skipped() -> None:
    with pytest.raises(TypeError, match=r"; or give the module a `read_batch\(batch\)` method that returns"):
        batch_data(object(), "text")
    with pytest.raises(ValueError, match=r"Expected a dict batch to hold the data under one of"):
        batch_data(object(), {"label": torch.ones(2)})
    assert batch_data(object(), "text", optional=True) is None
    assert batch_data(object(), {"label": torch.ones(2)}, optional=True) is None
    assert batch_data(SimpleNamespace(read_batch=lambda b: Batch(b)), "not a tensor", optional=True) is None


def test_grads_finite_agrees_with_torch_isfinite() -> None:
    g = torch.Generator().manual_seed(0)
    assert grads_finite([]) is True
    for bad in (float("nan"), float("inf"), -float("inf"), None):
        grads = [torch.randn(5, generator=g), torch.randn(2, 3, generator=g), torch.randn(1, generator=g)]
        if bad is not None:
            grads[1][1, 2] = bad
        expected = all(bool(torch.isfinite(t).all()) for t in grads)
        assert grads_finite(grads) is expected
    # Finite elements whose norm overflows float32 count as non-finite (one norm per tensor): their squares would
    # overflow an optimizer's second moment just the same. In float64 the same values are finite.
    huge = [torch.full((4,), 3e38)]
    assert grads_finite(huge) is False and grads_finite([t.double() for t in huge]) is True


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
