"""The package's buffers are constants: training never changes them, so DDP need not broadcast them every step.

DDP copies every buffer from rank 0 to the others before each forward pass (``broadcast_buffers=True``, for
running statistics such as BatchNorm's). The buffers of this package's priors, likelihoods and networks
(the prior's device anchor, a fixed Gaussian scale, PixelCNN's masks) never change, so with networks
that have no running statistics ``Trainer(strategy=DDPStrategy(broadcast_buffers=False))`` saves that
collective; the README says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule
from lightning_vae.distributions import GaussianLikelihood
from lightning_vae.nets import MLPEncoder, PixelCNNDecoder


def _models() -> dict[str, VAE]:
    return {
        "mlp": tiny_vae(),
        "fixed_scale_gaussian": tiny_vae(likelihood=GaussianLikelihood(sigma_mode="fixed", sigma=0.5)),
        "pixelcnn": VAE(
            MLPEncoder((1, 8, 8), latent_dim=2, hidden_sizes=(16,)),
            PixelCNNDecoder(2, (1, 8, 8), channels=8, n_layers=1),
            likelihood="bernoulli",
        ),
    }


@pytest.mark.parametrize("name", ["mlp", "fixed_scale_gaussian", "pixelcnn"])
def test_buffers_do_not_change_in_training(tmp_path: Path, name: str) -> None:
    vae = _models()[name]
    before = {n: b.detach().clone() for n, b in vae.named_buffers()}
    assert before  # each model has buffers
    dm = TensorDataModule(torch.rand(32, 1, 8, 8).round(), batch_size=8)
    Trainer(**trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1)).fit(vae, dm)
    after = dict(vae.named_buffers())
    assert set(after) == set(before)
    for n, b in before.items():
        assert torch.equal(after[n], b), n
