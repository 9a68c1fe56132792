"""Code of the annealing, target-rate and free-bits tests: data, an in-memory logger, a recorder, a user's own
annealable module, and short fits (one process or two DDP processes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from lightning_vae.functional import gaussian_kl
from lightning_vae.objective import free_bits_penalty
from support.modules import DestroyProcessGroupAtExit, trainer_kwargs


def binary_images(n: int = 256, side: int = 8, latent: int = 4, seed: int = 0) -> Tensor:
    """Binary images ``(n, 1, side, side)`` from a logistic model of ``latent`` Gaussian factors (a KL > 0 pays off)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent, generator=g)
    weights = 3.0 * torch.randn(latent, side * side, generator=g)
    return torch.bernoulli(torch.sigmoid(z @ weights), generator=g).view(n, 1, side, side)


class MemoryLogger(Logger):
    """Keeps every ``log_metrics`` call as ``{step: {key: float}}`` (use ``log_every_n_steps=1``)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[int, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        assert step is not None
        self.steps.setdefault(step, {}).update({k: float(v) for k, v in metrics.items()})

    def series(self, key: str) -> dict[int, float]:
        return {step: m[key] for step, m in sorted(self.steps.items()) if key in m}


class Recorder(Callback):
    """Records the protocol attributes the loss used at every optimizer step; with ``out_dir``, writes them per rank."""

    ATTRIBUTES = ("beta", "free_bits", "capacity", "capacity_gamma", "free_bits_mode")

    def __init__(self, out_dir: str | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.out_dir = out_dir

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        # After the loss of this step was computed and before any callback reacts to it, whatever the order.
        row = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        row.update({name: getattr(pl_module, name, None) for name in self.ATTRIBUTES})
        kl = trainer.callback_metrics.get("train/kl")
        row["kl"] = None if kl is None else float(kl)
        self.rows.append(row)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.out_dir is not None:
            Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.rows))

    def column(self, name: str) -> list[Any]:
        return [row[name] for row in self.rows]


class UserVAE(LightningModule):
    """A user's own VAE, not a ``lightning_vae.VAE``: it only keeps the annealing protocol.

    Its loss reads ``beta``, ``free_bits``, ``free_bits_mode``, ``free_bits_groups``, ``capacity`` and
    ``capacity_gamma`` at every step; ``training_step`` returns ``{"loss", "kl"}`` and logs ``train/kl``
    only when ``log_kl`` is set.
    """

    def __init__(self, data_dim: int = 64, latent_dim: int = 4, log_kl: bool = False, lr: float = 1e-2) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(data_dim, 32), nn.Tanh(), nn.Linear(32, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, 32), nn.Tanh(), nn.Linear(32, data_dim))
        self.beta = 1.0
        self.free_bits = 0.0
        self.free_bits_mode = "dim"
        self.free_bits_groups = 1
        self.capacity: float | None = None
        self.capacity_gamma = 1000.0
        self.log_kl, self.lr = log_kl, lr
        self.last_terms: dict[str, float] = {}

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x = batch[0].flatten(1)
        loc, log_var = self.encoder(x).chunk(2, dim=-1)
        z = loc + torch.randn_like(loc) * torch.exp(0.5 * log_var)
        recon = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1).mean()
        elementwise = gaussian_kl(loc, log_var)
        kl = elementwise.sum(-1)
        if self.capacity is not None:
            loss = recon + self.capacity_gamma * (kl.mean() - self.capacity).abs()
        else:
            penalty = free_bits_penalty(kl, elementwise, self.free_bits, self.free_bits_mode, self.free_bits_groups)
            loss = recon + self.beta * penalty
        self.last_terms = {"recon": recon.item(), "kl": kl.mean().item(), "loss": loss.item()}
        if self.log_kl:
            self.log("train/kl", kl.mean(), on_step=True, on_epoch=False)
        return {"loss": loss, "kl": kl.mean().detach()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def fit(tmp_path: Path, module: LightningModule, dm: LightningDataModule, callbacks: list, **overrides) -> Trainer:
    """Fit ``module`` quietly without validation, logging every step."""
    kwargs = dict(max_epochs=-1, limit_val_batches=0, log_every_n_steps=1, callbacks=callbacks)
    kwargs.update(overrides)
    trainer = Trainer(**trainer_kwargs(tmp_path, **kwargs))
    trainer.fit(module, dm)
    return trainer


def rank_rows(out: Path) -> tuple[list[dict], list[dict]]:
    """The rows a two-process :class:`Recorder` wrote, rank 0 then rank 1."""
    return json.loads((out / "rank0.json").read_text()), json.loads((out / "rank1.json").read_text())


def ddp_trainer(tmp_path: Path, callbacks: list[Callback], max_steps: int) -> Trainer:
    """Two ``ddp_spawn`` CPU processes, four batches per epoch, no validation."""
    return Trainer(
        **trainer_kwargs(
            tmp_path,
            strategy="ddp_spawn",
            devices=2,
            max_steps=max_steps,
            max_epochs=-1,
            limit_train_batches=4,
            limit_val_batches=0,
            callbacks=[*callbacks, DestroyProcessGroupAtExit()],
        )
    )
