"""Hierarchical models in the training loop: exact resume mid-epoch and bf16 autocast on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from support.modules import trainer_kwargs

from lightning_vae import VAE
from lightning_vae.callbacks import ExactResume
from lightning_vae.data import TensorDataModule
from lightning_vae.models import LadderVAEModel, StackedVAEModel

SHAPE = (1, 4, 4)
MODELS = {
    "stacked": lambda: StackedVAEModel(SHAPE, latent_sizes=(4, 2), hidden_sizes=((8,), (8,))),
    "ladder": lambda: LadderVAEModel(SHAPE, latent_sizes=(4, 2), hidden_sizes=((8,), (8,))),
}


def _data() -> TensorDataModule:
    x = torch.rand(48, *SHAPE, generator=torch.Generator().manual_seed(0)).round()
    return TensorDataModule(x, batch_size=8, shuffle=True, seed=3)


def _run(tmp_path: Path, name: str, max_steps: int, ckpt_path: str | None = None) -> VAE:
    torch.manual_seed(0)
    vae = VAE(model=MODELS[name]())
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    kwargs = trainer_kwargs(tmp_path, max_steps=max_steps, max_epochs=-1, limit_train_batches=None,
                            limit_val_batches=0, enable_checkpointing=True)  # fmt: skip
    trainer = Trainer(**kwargs, callbacks=[ExactResume(), checkpoint])
    trainer.fit(vae, datamodule=_data(), ckpt_path=ckpt_path)
    return vae


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_run_resumed_mid_epoch_is_bit_identical(name: str, tmp_path: Path) -> None:
    whole = _run(tmp_path / "whole", name, max_steps=9)
    _run(tmp_path / "part", name, max_steps=4)  # stops in the middle of the first epoch (6 batches)
    resumed = _run(tmp_path / "resumed", name, max_steps=9, ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_autocast_on_cpu_trains_with_a_float32_objective(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = VAE(model=MODELS[name](), n_eval_samples=4)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, precision="bf16-mixed", log_every_n_steps=1))
    x = torch.rand(32, *SHAPE).round()
    trainer.fit(vae, TensorDataModule(x, val=x, batch_size=8))
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(v) for v in metrics.values()) and "val/kl/z2" in metrics
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, _ = vae.compute_terms(x)
    assert terms.loss.dtype == torch.float32 and terms.kl_groups is not None
    assert all(v.dtype == torch.float32 for v in terms.kl_groups.values())
