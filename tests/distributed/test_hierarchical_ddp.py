"""A two-group model under DDP gives the per-group numbers of one process."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from support.modules import DestroyProcessGroupAtExit, DeterministicStacked, trainer_kwargs
from torch import Tensor

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule

N_TRAIN, N_VAL, GLOBAL_BATCH = 48, 21, 16


def _fit(tmp_path: Path, devices: int) -> tuple[dict[str, float], dict[str, Tensor]]:
    seed_everything(0)
    generator = torch.Generator().manual_seed(1)
    train = torch.rand(N_TRAIN, 1, 4, 4, generator=generator).round()
    val = torch.rand(N_VAL, 1, 4, 4, generator=generator).round()
    dm = TensorDataModule(train, val=val, batch_size=GLOBAL_BATCH // devices, shuffle=False)
    model = DeterministicStacked((1, 4, 4), latent_sizes=(4, 2), hidden_sizes=((8,), (8,)))
    vae = VAE(model=model, n_eval_samples=3, optimizer=partial(torch.optim.SGD, lr=0.05))
    extra = {"strategy": "ddp_spawn", "devices": 2} if devices == 2 else {}
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=None, limit_val_batches=None, **extra),
        num_sanity_val_steps=0,
        callbacks=[DestroyProcessGroupAtExit()],
    )
    trainer.fit(vae, datamodule=dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return metrics, {k: v.detach().clone() for k, v in vae.state_dict().items()}


def test_per_group_metrics_under_ddp_match_one_process(tmp_path: Path) -> None:
    one, weights_one = _fit(tmp_path / "one", devices=1)
    two, weights_two = _fit(tmp_path / "two", devices=2)
    assert set(one) == set(two) >= {"val/kl/z1", "val/kl/z2", "val/elbo", "val/nll_iw"}
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-5), key
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
