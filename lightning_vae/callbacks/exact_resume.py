"""``ExactResume``: the random draws of each training step are a function of the run's seed and the step."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_vae.callbacks.epoch_edges import resume_at_epoch_edge
from lightning_vae.checkpoint_io import AtomicCheckpointIO
from lightning_vae.checks import check_int
from lightning_vae.data.common import batch_key


class ExactResume(Callback):
    """Seed torch (CPU, CUDA), NumPy and ``random`` at the start of each training batch from ``(seed, epoch, batch)``.

    Lightning restores weights, optimizer, schedulers, loops and callback states from a checkpoint, but not
    the random state: a run resumed mid-epoch draws other reparameterisation noise (and dropout masks)
    than the run it continues. With this callback the draws of a training step depend only on the seed,
    the epoch, the batch index and the process rank, so a run killed at any point and resumed from its
    last checkpoint ends with the same weights as the uninterrupted run (bit for bit on a CPU; on a GPU up
    to the non-determinism of its kernels). The data modules' training loaders resume mid-epoch
    themselves (:class:`~lightning_vae.data.common.ResumableLoader`). When the trainer writes checkpoints
    with Lightning's default writer, the callback replaces it by
    :class:`~lightning_vae.checkpoint_io.AtomicCheckpointIO`, so a process killed while writing one leaves
    the previous checkpoint intact.

    The seed is saved in the checkpoint, so a resumed run keeps it.

    Args:
        seed: Base seed; ``None`` takes the seed given to ``seed_everything`` (``PL_GLOBAL_SEED``), else 0.

    Raises:
        TypeError: For a seed that is not an int or ``None``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[ExactResume(seed=0)], logger=False, enable_checkpointing=False)
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = None if seed is None else check_int("seed", seed)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.seed is None:
            self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default writer: make it atomic
            strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        key = batch_key(self.seed or 0, trainer.current_epoch, trainer.global_rank, batch_idx)
        # The CPU generator directly (torch.manual_seed also walks every accelerator backend: ~100x slower),
        # the CUDA generators when CUDA is in use.
        torch.default_generator.manual_seed(key)
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(key)
        random.seed(key)
        np.random.seed(key % 2**32)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = state_dict.get("seed", self.seed)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called before Lightning restores its loops from the same dictionary.
        resume_at_epoch_edge(checkpoint, iteration_based=trainer.max_steps != -1)

