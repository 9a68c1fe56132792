"""``ExactResume``: the random draws of each training step are a function of the run's seed and the step."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lightning_vae.callbacks.epoch_edges import resume_at_epoch_edge
from lightning_vae.checkpoints import checkpoint_step, remove_unfinished_writes, use_safe_checkpoint_io
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
    :class:`~lightning_vae.checkpoints.AtomicCheckpointIO`, so a process killed while writing one leaves
    the previous checkpoint intact (and resumed checkpoints are read weights-only, their CRCs checked); when
    training starts, what such a process left in the checkpoint folders is removed
    (:func:`clean_checkpoint_folders`). Checkpoints written at an epoch's edge are resumed as the uninterrupted
    run went on (:func:`~lightning_vae.callbacks.epoch_edges.resume_at_epoch_edge`), through any number of
    resumes.

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
        use_safe_checkpoint_io(trainer)  # Lightning's default writer: atomic writes, weights-only reads

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

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            clean_checkpoint_folders(trainer)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called before Lightning restores its loops from the same dictionary.
        resume_at_epoch_edge(checkpoint, iteration_based=trainer.max_steps != -1)


def clean_checkpoint_folders(trainer: Trainer) -> list[Path]:
    """What a run killed while writing checkpoints left behind, removed when training starts (rank zero).

    In every ``ModelCheckpoint`` folder: the ``.tmp`` files of writes cut off midway; and, when the run resumes from
    a checkpoint in that folder, the checkpoints the killed run wrote after it (a higher step, not among the files
    the restored callback keeps), which the resumed run would otherwise keep beside its own as ``...-v1.ckpt``. A
    ``last`` file left there becomes the one the resumed run overwrites, not ``last-v1.ckpt``.

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    resumed = Path(trainer.ckpt_path).resolve() if trainer.ckpt_path and os.path.isfile(trainer.ckpt_path) else None
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or not callback.dirpath or not os.path.isdir(callback.dirpath):
            continue
        folder = Path(callback.dirpath).resolve()
        removed += remove_unfinished_writes(folder)
        if resumed is None or resumed.parent != folder:
            continue
        last = folder / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        if (
            callback.save_last
            and last.is_file()
            and not (callback.last_model_path and os.path.isfile(callback.last_model_path))
        ):
            callback.last_model_path = str(last)
        kept = {resumed, *(Path(p).resolve() for p in callback.best_k_models)}
        kept |= {Path(p).resolve() for p in (callback.best_model_path, callback.last_model_path) if p}
        for path in sorted(folder.glob(f"*{callback.FILE_EXTENSION}")):
            if path.resolve() in kept or not path.is_file():
                continue
            step = checkpoint_step(path)
            if step is not None and step > trainer.global_step:
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        rank_zero_info(
            "Removed what an interrupted run left in its checkpoint folders: " + ", ".join(str(p) for p in removed)
        )
    return removed
