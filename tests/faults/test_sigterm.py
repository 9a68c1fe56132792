"""SIGTERM (a scheduler's preemption notice) is honoured inside a long ``val/nll_iw`` step, not after it.

Lightning checks for SIGTERM between batches; one validation batch of the importance-weighted NLL with thousands
of samples can take minutes, long past a scheduler's grace period. The estimate checks between its chunks.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from support.modules import trainer_kwargs
from torch import nn

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder


class TermAt(nn.Module):
    """A decoder that sends this process SIGTERM on its ``at``-th call in evaluation, and counts the calls."""

    def __init__(self, net: nn.Module, at: int) -> None:
        super().__init__()
        self.net, self.at, self.calls = net, at, 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
        return self.net(z)


def test_sigterm_stops_the_importance_weighted_nll_within_a_chunk(tmp_path: Path) -> None:
    decoder = TermAt(MLPDecoder(4, (1, 8, 8), hidden_sizes=(16,)), at=5)
    vae = VAE(
        MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(16,)),
        decoder,
        latent_dim=4,
        data_shape=(1, 8, 8),
        n_eval_samples=400,  # 200 chunks of 2 samples x 4 examples
        iw_chunk_size=8,
    )
    data = TensorDataModule(torch.rand(8, 1, 8, 8).round(), val=torch.rand(8, 1, 8, 8).round(), batch_size=4)
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None))
    with pytest.raises(SIGTERMException):
        trainer.validate(vae, datamodule=data, verbose=False)
    # the first decoder call is the batch's one-sample ELBO; the chunk that got the signal finishes, no other starts
    assert decoder.calls == 5, f"{decoder.calls} decoder calls: the estimate went on after SIGTERM"
