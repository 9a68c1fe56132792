"""Every private API of another library the package uses (``lightning_vae/adapters.py``), against the installed one.

A release that renames or removes one fails here, by name, instead of somewhere in a run.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.distributions import Distribution
from torch.utils.tensorboard import SummaryWriter

from lightning_vae import adapters


def test_lightning_trainer_says_whether_this_step_logs(tmp_path) -> None:
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    assert hasattr(trainer, "_logger_connector"), "Trainer._logger_connector is gone"
    assert isinstance(type(trainer._logger_connector).should_update_logs, property)
    assert adapters.should_update_logs(trainer) in (True, False)
    assert adapters.should_update_logs(None) is True


def test_lightning_tensorboard_logger_keeps_its_placeholder_hp_metric(tmp_path) -> None:
    logger = TensorBoardLogger(tmp_path)
    assert logger._default_hp_metric is True, "TensorBoardLogger._default_hp_metric is gone"
    assert adapters.disable_hp_metric(logger) and logger._default_hp_metric is False
    assert not adapters.disable_hp_metric(logger)


def test_lightning_cli_members_the_cli_uses_exist() -> None:
    for name in adapters.LIGHTNING_CLI_MEMBERS:
        assert hasattr(LightningCLI, name) or name in LightningCLI.__init__.__code__.co_names, name
    assert callable(LightningCLI._parse_ckpt_path)


def test_torch_compile_marks_the_module() -> None:
    net = nn.Linear(2, 2)
    assert not adapters.is_compiled(net)
    net.compile()
    assert adapters.is_compiled(net), "nn.Module._compiled_call_impl is gone"


def test_torch_foreach_norm_matches_the_norms() -> None:
    tensors = [torch.tensor([3.0, 4.0]), torch.ones(4)]
    torch.testing.assert_close(torch.stack(adapters.foreach_norms(tensors)), torch.tensor([5.0, 2.0]))


def test_torch_distribution_validation_default() -> None:
    previous = adapters.default_validate_args()
    try:
        Distribution.set_default_validate_args(False)
        assert adapters.default_validate_args() is False
        Distribution.set_default_validate_args(True)
        assert adapters.default_validate_args() is True
    finally:
        Distribution.set_default_validate_args(previous)


def test_tensorboard_summary_writer_has_its_file_writer(tmp_path) -> None:
    writer = SummaryWriter(tmp_path)
    try:
        assert callable(adapters.tensorboard_file_writer(writer).add_summary)
    finally:
        writer.close()


def test_lightning_logging_step_and_initial_hparams(tmp_path) -> None:
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.fit_loop.epoch_loop._batches_that_stepped, int), "_batches_that_stepped is gone"
    assert adapters.batches_that_stepped(trainer) == 0 and adapters.batches_that_stepped(None) == 0
    from lightning.pytorch import LightningModule

    class Module(LightningModule):
        def __init__(self, a: int = 1) -> None:
            super().__init__()
            self.save_hyperparameters()

    module = Module()
    initial = adapters.initial_hparams(module)
    assert initial is not None and initial["a"] == 1, "LightningModule._hparams_initial is gone"
    initial["a"] = 2
    assert module.hparams_initial["a"] == 2
