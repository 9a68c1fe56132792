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


def test_lightning_results_of_step_logs_can_be_marked_read(tmp_path) -> None:
    """``Trainer._results``, its items' ``meta`` (``fx``, ``on_step``, ``on_epoch``) and ``has_reset``: a step-only
    value marked read leaves Lightning's per-batch walk, keeps its last value in ``callback_metrics``, and comes
    back when it is logged again; a value aggregated over the epoch is never marked."""
    from lightning.pytorch import Callback, LightningModule

    seen: dict[int, tuple[int, bool, float, bool]] = {}

    class Module(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            if batch_idx % 2 == 0:
                self.log("step_only", float(batch_idx))
            self.log("per_epoch", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Probe(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                return
            assert trainer._results is not None, "Trainer._results is gone"
            for item in trainer._results.values():
                assert {"fx", "on_step", "on_epoch"} <= set(vars(item.meta)), "_ResultMetric.meta changed"
                assert isinstance(item.has_reset, bool), "_ResultMetric.has_reset is gone"
            marked = adapters.retire_step_logs(trainer)
            walked = "step_only" in trainer._results.metrics(True)["callback"]
            epoch_kept = not next(v for v in trainer._results.values() if v.meta.name == "per_epoch").has_reset
            seen[batch_idx] = (marked, walked, float(trainer.callback_metrics["step_only"]), epoch_kept)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = Trainer(
        default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False, callbacks=[Probe()]
    )
    trainer.fit(Module(), data)
    assert seen[1] == (1, False, 0.0, True)  # logged at batch 0, read: out of the walk, last value kept
    assert seen[2] == (0, False, 0.0, True)  # nothing new to mark
    assert seen[3] == (1, False, 2.0, True)  # logged again at batch 2: walked after it, then marked
    assert float(trainer.callback_metrics["step_only"]) == 2.0
    assert "per_epoch" in trainer.callback_metrics
    assert adapters.retire_step_logs(None) == 0
