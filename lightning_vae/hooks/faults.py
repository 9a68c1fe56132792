"""Lightning hooks of the non-finite policy and of the strategy check (a mixin of the training module)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_vae.checkpoint_io import use_safe_checkpoint_io
from lightning_vae.guard import NonFiniteGuard
from lightning_vae.utilities import logs_this_step


class FaultHooks(LightningModule):
    """Runs the module's :class:`~lightning_vae.guard.NonFiniteGuard` from Lightning's hooks; refuses sharding."""

    guard: NonFiniteGuard

    def _epoch_edge(self, batch_idx: int) -> bool:
        """First or last training batch of the epoch: logged too, so short runs and epoch ends have values."""
        n = self._trainer.num_training_batches  # type: ignore[union-attr]  # called during fit only
        return batch_idx == 0 or (isinstance(n, int) and batch_idx == n - 1)

    def setup(self, stage: str) -> None:
        """Read checkpoints safely (:func:`~lightning_vae.checkpoint_io.use_safe_checkpoint_io`); refuse strategies
        that shard the parameters over several processes (FSDP, DeepSpeed stage 3).

        Callbacks and evaluation call the model outside the module's forward, some on rank zero only; with
        sharded parameters those calls see shards. Data parallelism (DDP) is the supported way to scale.

        Raises:
            ValueError: For a sharding strategy with more than one process.
        """
        if self._trainer is not None:
            use_safe_checkpoint_io(self.trainer)  # a resumed checkpoint is read weights-only, its CRCs checked
        if self._trainer is None or self.trainer.world_size <= 1:
            return
        strategy = self.trainer.strategy
        if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)) or getattr(strategy, "zero_stage_3", False):
            raise ValueError(
                f"VAE does not support sharded training ({type(strategy).__name__} with {self.trainer.world_size} "
                "processes): callbacks and evaluation call the model outside the sharded forward, some on rank "
                "zero only. Use data parallelism: Trainer(strategy='ddp', devices=N) (the networks fit on one device)."
            )

    def on_fit_start(self) -> None:
        # On a CPU reading the loss costs nothing; elsewhere the guard keeps device values and reads them later.
        self.guard.deferred = self.device.type != "cpu"
        if self.guard.policy == "skip" and self.trainer.world_size > 1:
            rank_zero_warn(
                "on_nonfinite='skip' under several processes: a step is skipped on every rank when any "
                "rank's loss or the averaged gradients are non-finite (one all-reduce per step)."
            )
            self.guard.agree = _agree_over_ranks

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.guard.pending and (logs_this_step(self._trainer) or self._epoch_edge(batch_idx)):
            self.guard.flush(self)

    def on_train_epoch_end(self) -> None:
        self.guard.flush(self)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # Under 16-bit mixed precision the gradient scaler owns non-finite gradients (it skips those steps itself).
        scaled = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None) is not None
        self.guard.check_step(self, scaled=scaled)


def _agree_over_ranks(flags: Tensor) -> Tensor:
    """``[any non-finite, largest |loss|]`` over all processes: the same skip decision on every rank."""
    import torch.distributed as dist

    flags = flags.clone()
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


__all__ = ["FaultHooks"]
