"""A LightningModule that is not a ``VAE`` but keeps the monitor protocol, and data for the callback tests.

Imported by the collapse-monitor and aggressive-training tests (and by their DDP workers by name).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.distributions import Independent, Normal
from torch.utils.data import DataLoader, Dataset

from lightning_vae.data import Batch
from lightning_vae.functional import gaussian_kl

SIDE, LATENT = 6, 3


def binary_patterns(n: int, seed: int = 0) -> Tensor:
    """``n`` binary 6x6 images made of a few random stripes: structure a latent code can capture."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, 2, (n, SIDE, 1), generator=g).float()
    cols = torch.randint(0, 2, (n, 1, SIDE), generator=g).float()
    image = torch.maximum(rows.expand(n, SIDE, SIDE), cols.expand(n, SIDE, SIDE))
    flips = torch.rand(n, SIDE, SIDE, generator=g) < 0.05
    return torch.where(flips, 1 - image, image).unsqueeze(1)


class IndexedImages(Dataset):
    """Items ``(image, index)``, so a module can use per-example fixed noise."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], i


class ProtocolModule(LightningModule):
    """A Bernoulli VAE written from scratch (not ``VAE``) keeping the monitor and aggressive-training protocols.

    With ``decoder_uses_z=False`` the decoder is a learned constant: it ignores z, so training drives
    every posterior to the prior (posterior collapse by construction). With ``fixed_noise`` the
    validation samples are ``z = mean + std * eps[index]`` for a fixed table ``eps``, so the step
    outputs do not depend on the random stream (equal on one process and under DDP).
    """

    def __init__(
        self,
        decoder_uses_z: bool = True,
        lr: float = 1e-2,
        n_data: int = 0,
        val_batch_sizes: tuple[int, ...] = (),
        data_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        d = SIDE * SIDE
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, 2 * LATENT))
        if decoder_uses_z:
            self.decoder: nn.Module = nn.Sequential(nn.Linear(LATENT, 32), nn.Tanh(), nn.Linear(32, d))
        else:
            self.decoder = ConstantDecoder(d)
        self.register_buffer("eps", torch.randn(max(n_data, 1), LATENT, generator=torch.Generator().manual_seed(7)))

    # the protocol
    def read_batch(self, batch: Any) -> Batch:
        return Batch(batch[0] if isinstance(batch, (tuple, list)) else batch)

    def encode(self, x: Tensor) -> Independent:
        loc, log_var = self.encoder(x).chunk(2, dim=-1)
        return Independent(Normal(loc, torch.exp(0.5 * log_var)), 1)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        logits = self.decoder(z).view(*z.shape[:-1], *x.shape[1:])
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)
        return log_px + Independent(Normal(torch.zeros_like(z), 1.0), 1).log_prob(z)

    def training_loss(self, batch: Any) -> Tensor:
        x = self.read_batch(batch).x
        q = self.encode(x)
        z = q.rsample()
        logits = self.decoder(z).view_as(x)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
        kl = gaussian_kl(q.base_dist.loc, 2 * torch.log(q.base_dist.scale)).sum(-1)
        return (recon + kl).mean()

    # Lightning hooks
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.training_loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        x, index = batch
        q = self.encode(x)
        z = q.base_dist.loc + q.base_dist.scale * self.eps[index]
        return {"loss": torch.zeros(()), "posterior": q, "z": z, "kl_per_dim": None}

    test_step = validation_step

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def val_dataloader(self) -> DataLoader:
        """Fixed batches of the given sizes; under DDP rank r takes batches r, r + W, ... (no padding)."""
        images = binary_patterns(sum(self.hparams.val_batch_sizes), seed=self.hparams.data_seed + 1)
        bounds = torch.tensor((0, *self.hparams.val_batch_sizes)).cumsum(0).tolist()
        batches = [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        return DataLoader(IndexedImages(images), batch_sampler=batches[rank::world])


class ConstantDecoder(nn.Module):
    """Logits that do not depend on z."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(size))

    def forward(self, z: Tensor) -> Tensor:
        return self.logits.expand(*z.shape[:-1], -1) + 0.0 * z.sum(-1, keepdim=True)


def train_loader(n: int = 256, batch_size: int = 32, seed: int = 0) -> DataLoader:
    return DataLoader(IndexedImages(binary_patterns(n, seed)), batch_size=batch_size, shuffle=True)
