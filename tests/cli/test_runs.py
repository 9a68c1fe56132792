"""runs.py: the summary a run prints (steps, fractional epochs, each logger's folder), also after ddp_spawn."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from support.modules import tiny_vae, trainer_kwargs
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae.cli import build_cli
from lightning_vae.cli.runs import summarize


def test_the_summary_counts_whole_epochs_and_names_each_logger(tmp_path: Path) -> None:
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=2, logger=CSVLogger(tmp_path), limit_val_batches=1))
    data = DataLoader(TensorDataset(torch.rand(8, 1, 8, 8).round()), batch_size=4)
    trainer.fit(tiny_vae(), data, data)
    text = summarize(trainer)
    assert "trained 4 steps (2 epochs)" in text
    assert re.search(r"^  CSV logs: .*lightning_logs.version_0$", text, re.M) and "TensorBoard" not in text
    assert "tensorboard --logdir" not in text


def test_the_summary_reads_the_record_a_spawned_worker_sends_back(tmp_path: Path) -> None:
    """In the main process of ddp_spawn the trainer's counters stay at zero; the workers' record is used."""
    from lightning_vae.cli.runs import PROGRESS_KEY, pin_logger_versions

    trainer = Trainer(
        accelerator="cpu", strategy="ddp_spawn", devices=2, logger=CSVLogger(tmp_path), enable_checkpointing=False
    )
    assert trainer.loggers[0]._version is None
    pin_logger_versions(trainer)  # fixed before the workers start, so they and the main process name one folder
    assert trainer.loggers[0]._version == 0
    trainer.callback_metrics[PROGRESS_KEY] = torch.tensor([6.0, 6.0, 4.0], dtype=torch.float64)
    assert "lightning-vae: trained 6 steps (1.50 epochs: 6 batches of 4 per epoch)" in summarize(trainer)


@pytest.mark.slow
def test_the_summary_after_ddp_spawn_reports_the_workers_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
    build_cli(
        args=[
            "fit",
            "--config=configs/cli/shapes.yaml",
            "--data.init_args.n_train=128",
            "--data.init_args.n_val=64",
            "--data.init_args.batch_size=32",  # 2 batches per rank and epoch
            "--model.encoder.init_args.latent_dim=2",
            "--model.decoder.init_args.latent_dim=2",
            "--trainer.max_epochs=1",
            "--trainer.strategy=ddp_spawn",
            "--trainer.devices=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=CSVLogger",
            f"--trainer.logger.save_dir={tmp_path}",
            "--trainer.callbacks+=support.modules.DestroyProcessGroupAtExit",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    out = capsys.readouterr().out
    assert "lightning-vae: trained 2 steps (1 epoch)" in out
    (logs,) = re.findall(r"^  CSV logs: (.*)$", out, re.M)
    assert Path(logs).is_dir() and (Path(logs) / "metrics.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
