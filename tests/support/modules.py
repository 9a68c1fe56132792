"""Small modules and settings the tests share: a tiny VAE, quiet Trainer settings, users' plain encoders and decoders,
and a callback that closes a spawned worker's process group."""

from __future__ import annotations

import atexit
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningDataModule
from torch import Tensor, nn
from torch.distributions import Independent, Normal
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.models import Inference, StackedVAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class DestroyProcessGroupAtExit(Callback):
    """Destroy the process group when a spawned worker's interpreter exits.

    Lightning does this for NCCL only; a gloo group left to the C++ static destructors can abort
    the worker at exit ("terminate called without an active exception") after a successful run.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            atexit.register(_destroy_process_group)


def tiny_vae(data_shape: tuple[int, ...] = (1, 8, 8), latent_dim: int = 4, **kwargs) -> VAE:
    """A small MLP VAE for fast tests."""
    return VAE(
        MLPEncoder(data_shape, latent_dim=latent_dim, hidden_sizes=(32,)),
        MLPDecoder(latent_dim, data_shape, hidden_sizes=(32,)),
        **kwargs,
    )


def trainer_kwargs(tmp_path: Path, **overrides) -> dict:
    """Quiet CPU Trainer settings: no progress bar, logger, checkpoints or model summary; two batches per epoch."""
    kwargs = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        limit_train_batches=2,
        limit_val_batches=2,
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    kwargs.update(overrides)
    return kwargs


class DistributionEncoder(nn.Module):
    """An encoder that returns a ``torch.distributions`` object, not ``(loc, log_var)``: the general path."""

    def __init__(self) -> None:
        super().__init__()
        self.net = MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(16,))

    def forward(self, x: Tensor) -> Independent:
        loc, log_var = self.net(x)
        return Independent(Normal(loc, (0.5 * log_var).exp()), 1)


class PlainEncoder(nn.Module):
    """A user's encoder that records nothing about itself (flattens ``x`` to ``(loc, log_var)``)."""

    def __init__(self, in_features: int = 64, latent_dim: int = 4) -> None:
        super().__init__()
        self.net = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_var = self.net(x.flatten(1)).chunk(2, -1)
        return loc, log_var


class PlainDecoder(nn.Module):
    """A user's decoder that records nothing about itself (``z`` to logits of shape ``(..., *shape)``)."""

    def __init__(self, latent_dim: int = 4, shape: tuple[int, ...] = (1, 8, 8)) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Linear(latent_dim, int(torch.tensor(self.shape).prod()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(*z.shape[:-1], *self.shape)


class MeanSampleGaussian(DiagonalGaussian):
    """A diagonal Gaussian whose "samples" are its mean: every loss and metric becomes deterministic."""

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.loc.expand(torch.Size(sample_shape) + self.loc.shape)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.rsample(sample_shape).detach()


class DeterministicStacked(StackedVAEModel):
    """Two groups whose posterior "samples" are their means: runs that split the data differently compare exactly."""

    def inference(self, x: torch.Tensor, n_samples: int = 1) -> Inference:
        q1 = MeanSampleGaussian(*self.bottom_up[0](x.flatten(1)))
        z1 = q1.rsample((n_samples,))
        q2 = MeanSampleGaussian(*self.bottom_up[1](z1))
        return Inference({"z2": q2, "z1": q1}, {"z2": q2.rsample(), "z1": z1})


class DeterministicEncoder(nn.Module):
    """An encoder returning :class:`MeanSampleGaussian`, so runs that differ only in how the data are split
    (one process vs DDP ranks) can be compared to float precision."""

    def __init__(self, in_features: int = 64, latent_dim: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, 32), nn.Tanh(), nn.Linear(32, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> MeanSampleGaussian:
        loc, log_var = self.net(x.flatten(1)).chunk(2, -1)
        return MeanSampleGaussian(loc, log_var)


class UserDataModule(LightningDataModule):
    """A user's data module whose defaults share names with ShapesDataModule's (batch_size, n_val)."""

    def __init__(self, root: str = "/data/mine", batch_size: int = 7, n_val: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.rand(8, 1, 32, 32).round()), batch_size=self.hparams.batch_size)
