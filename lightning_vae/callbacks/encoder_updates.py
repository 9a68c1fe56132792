"""The two halves of aggressive encoder training: encoder-only updates, then a step without the encoder.

:class:`EncoderUpdates` updates the encoder alone with an optimiser (and, under 16-bit mixed precision, a
gradient scaler) of its own until the loss stops improving; :func:`fresh_loader` gives the shuffled
batches it draws. :class:`StepWithoutEncoder` runs the training step that follows with the encoder out of
its backward pass. :class:`~lightning_vae.callbacks.AggressiveEncoderTraining` decides when they run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, cast

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, IterableDataset, Sampler

from lightning_vae.data.common import KeyedDataset, batch_key
from lightning_vae.utilities import grads_finite

__all__ = ["EncoderUpdates", "KeyedShuffle", "StepWithoutEncoder", "encoder_parameters", "fresh_loader"]


class KeyedShuffle(Sampler):
    """Shuffled ``(index, batch key)`` pairs for a :class:`~lightning_vae.data.common.KeyedDataset`.

    Each pass is a new order (seeded with ``seed`` and the pass number) with a key per batch of
    ``batch_size`` from :func:`~lightning_vae.data.common.batch_key`.

    Example::

        >>> sampler = KeyedShuffle(5, batch_size=2, seed=0)
        >>> sorted(index for index, _ in sampler), len({key for _, key in sampler})
        ([0, 1, 2, 3, 4], 3)
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed, self.passes = n, batch_size, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.passes)
        order = torch.randperm(self.n, generator=generator).tolist()
        keys = [batch_key(self.seed, self.passes, 0, b) for b in range(math.ceil(self.n / self.batch_size))]
        self.passes += 1
        return iter((index, keys[i // self.batch_size]) for i, index in enumerate(order))


def fresh_loader(trainer: Trainer, seed: int, persistent: bool = True) -> DataLoader:
    """A shuffled loader over the training loader's dataset, with its batch size, collate function, workers and
    pinned memory (``persistent``: keep the workers between passes).

    Raises:
        TypeError: Unless the trainer's training loader is one ``DataLoader`` over a map-style dataset.
    """
    loader = trainer.train_dataloader
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "AggressiveEncoderTraining draws fresh batches from the training DataLoader's dataset and needs a "
            f"single DataLoader over a map-style dataset, got {type(loader).__name__}"
        )
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or 1
    workers = loader.num_workers
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "collate_fn": loader.collate_fn,
        "num_workers": workers,
        "pin_memory": loader.pin_memory,
        "persistent_workers": persistent and workers > 0,
        "worker_init_fn": loader.worker_init_fn,
    }
    if workers > 0:
        common["multiprocessing_context"] = loader.multiprocessing_context
    if isinstance(loader.dataset, KeyedDataset):
        # Its examples are asked for as (index, batch key) (e.g. MNIST's dynamic binarisation): draw the keys too.
        return DataLoader(loader.dataset, sampler=KeyedShuffle(len(loader.dataset), batch_size, seed), **common)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(loader.dataset, shuffle=True, generator=generator, **common)


def encoder_parameters(pl_module: LightningModule) -> list[nn.Parameter]:
    """The trainable parameters of ``pl_module.encoder``."""
    encoder = getattr(pl_module, "encoder", None)
    assert isinstance(encoder, nn.Module)
    return [p for p in encoder.parameters() if p.requires_grad]


def _reduce_mean(trainer: Trainer, value: Tensor) -> Tensor:
    return trainer.strategy.reduce(value, reduce_op="mean") if trainer.world_size > 1 else value


def _all_finite(trainer: Trainer, loss: Tensor) -> bool:
    """Whether the loss is finite on every process (one all-reduce under DDP; a NaN on one rank makes it NaN)."""
    return bool(torch.isfinite(_reduce_mean(trainer, loss.detach().float())))


class EncoderUpdates:
    """Update the encoder alone, from the current batch then fresh ones, until the inner loss stops improving.

    Every ``check_every`` inner steps the mean loss of those steps is compared with that of the previous
    ``check_every``; the loop ends when it got worse or after ``max_steps``. Under DDP the gradients and
    the stopping decision's loss are averaged over processes, so every process keeps the same encoder. A
    step whose gradient is NaN or inf is skipped (the encoder and the optimiser's state stay as they were);
    under 16-bit mixed precision the loss is scaled by a ``GradScaler`` of its own; a NaN loss on any process
    ends the loop on every process.

    Args:
        optimizer: Builds the optimiser from the encoder's parameters.
        max_steps: Most encoder updates per call.
        check_every: Inner steps per window of the "stopped improving" test.
        gradient_clip_val: Clip the gradients to this norm; ``None`` does not clip.
    """

    def __init__(
        self, optimizer: OptimizerCallable, max_steps: int, check_every: int, gradient_clip_val: float | None
    ) -> None:
        self.optimizer_factory = optimizer
        self.max_steps, self.check_every, self.gradient_clip_val = max_steps, check_every, gradient_clip_val
        #: Steps skipped for a NaN/inf gradient (an overflow under 16-bit mixed precision).
        self.skipped = 0
        self.optimizer: Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._pending_optimizer: dict[str, Any] | None = None
        self._pending_scaler: dict[str, Any] | None = None

    def _get_optimizer(self, pl_module: LightningModule) -> Optimizer:
        if self.optimizer is None:
            self.optimizer = self.optimizer_factory(encoder_parameters(pl_module))
            if self._pending_optimizer is not None:
                self.optimizer.load_state_dict(self._pending_optimizer)
                self._pending_optimizer = None
        return self.optimizer

    def _get_scaler(self, trainer: Trainer, pl_module: LightningModule) -> torch.amp.GradScaler | None:
        """A gradient scaler of the inner loop's own when the run scales its gradients (16-bit mixed precision)."""
        outer = getattr(trainer.precision_plugin, "scaler", None)
        if outer is None:
            return None
        if self.scaler is None:
            # Start at the run's current scale (one host read, once), so the first inner steps do not overflow
            # where the outer ones have already found their scale.
            self.scaler = torch.amp.GradScaler(pl_module.device.type, init_scale=float(outer.get_scale()))
            if self._pending_scaler is not None:
                self.scaler.load_state_dict(self._pending_scaler)
                self._pending_scaler = None
        return self.scaler

    def run(self, trainer: Trainer, pl_module: LightningModule, batch: Any, fresh: Callable[[], Any]) -> int:
        """Update the encoder on ``batch``, then on batches from ``fresh()``; return the number of inner steps."""
        optimizer = self._get_optimizer(pl_module)
        scaler = self._get_scaler(trainer, pl_module)
        params = encoder_parameters(pl_module)
        window: list[Tensor] = []
        previous = math.inf
        steps = 0
        current = batch
        with torch.enable_grad():
            while steps < self.max_steps:
                with trainer.strategy.precision_plugin.forward_context():
                    loss = cast(Any, pl_module).training_loss(current)
                raw = torch.autograd.grad(scaler.scale(loss) if scaler is not None else loss, params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, raw)]
                if trainer.world_size > 1:
                    flat = _reduce_mean(trainer, torch.cat([g.reshape(-1) for g in grads]))
                    grads = list(torch.split(flat, [g.numel() for g in grads]))
                for p, g in zip(params, grads):
                    p.grad = g.reshape(p.shape).to(p.dtype)
                stepped = self._step(optimizer, scaler, params)
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                if not stepped:  # decided on the averaged gradients: the same on every process
                    self.skipped += 1
                    if not _all_finite(trainer, loss):
                        # A loss is NaN/inf (on this or another process): the joint step that follows meets this
                        # batch (and the module's non-finite policy); more inner steps would only be skipped too.
                        # Decided on every process's loss, so that all leave the loop together.
                        break
                else:
                    window.append(loss.detach().float())
                if len(window) == self.check_every:
                    mean = float(_reduce_mean(trainer, torch.stack(window).mean()))
                    if mean > previous:
                        break
                    previous, window = mean, []
                if steps < self.max_steps:
                    current = fresh()
        return steps

    def _step(self, optimizer: Optimizer, scaler: torch.amp.GradScaler | None, params: list[nn.Parameter]) -> bool:
        """Step the optimiser unless a gradient is NaN/inf; return whether it stepped.

        With a scaler (16-bit mixed precision) this is what ``GradScaler`` does: unscale, skip the step on
        an overflow and lower the scale. Without one the gradients' norms are checked the same way. Either
        way a skipped step leaves the encoder and the optimiser's state (Adam's moments and step count)
        as they were; it costs one host read per inner step, as a gradient scaler does.
        """
        if scaler is not None:
            scaler.unscale_(optimizer)
            if self.gradient_clip_val is not None:
                torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
            scale = scaler.get_scale()
            scaler.step(optimizer)  # skipped when unscale_ found an inf or NaN
            scaler.update()
            return scaler.get_scale() >= scale  # the scale is lowered exactly when the step was skipped
        if not grads_finite([p.grad for p in params if p.grad is not None]):
            return False
        if self.gradient_clip_val is not None:
            torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
        optimizer.step()
        return True

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's and scaler's state (what is not built yet: the state waiting to be loaded)."""
        return {
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else self._pending_optimizer,
            "scaler": self.scaler.state_dict() if self.scaler is not None else self._pending_scaler,
            "skipped_inner_steps": self.skipped,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the states to load into the optimiser and scaler when they are built."""
        self.optimizer, self._pending_optimizer = None, state_dict.get("optimizer")
        self.scaler, self._pending_scaler = None, state_dict.get("scaler")
        self.skipped = int(state_dict.get("skipped_inner_steps", 0))


class StepWithoutEncoder:
    """The training step after the inner loop, with the encoder's parameters out of its backward pass.

    Between :meth:`enter` (after the inner loop) and :meth:`exit` (at the end of the batch) the encoder's
    parameters do not require gradients: the backward pass does not compute theirs (VampPrior's pseudo-inputs
    still get theirs through the encoder), so under 16-bit mixed precision an overflow there cannot make the
    run's gradient scaler skip the decoder's step and lower its scale (the scaler unscales every gradient of
    the optimiser before ``on_before_optimizer_step``, where they used to be dropped). Under DDP the strategy's
    gradient all-reduce is held (``block_backward_sync``) and :meth:`after_backward` averages the other
    gradients over processes in one all-reduce, before the scaler reads them, so the encoder's gradients are
    neither computed nor sent. Other strategies keep the encoder in the backward pass (``active`` stays
    ``False``) and the callback drops its gradients before the optimiser step.
    """

    def __init__(self) -> None:
        self.frozen: list[nn.Parameter] = []
        self._sync: ExitStack | None = None

    @property
    def active(self) -> bool:
        """Whether the encoder is out of the current step's backward pass."""
        return bool(self.frozen)

    def enter(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take the encoder out of the step's backward pass (single device or DDP); hold DDP's all-reduce."""
        strategy = trainer.strategy
        if self.frozen or not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)):
            return
        self.frozen = encoder_parameters(pl_module)
        for p in self.frozen:
            p.requires_grad_(False)
        if isinstance(strategy, DDPStrategy) and trainer.world_size > 1:
            self._sync = ExitStack()
            self._sync.enter_context(strategy.block_backward_sync())

    def after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Under DDP: average the gradients of every other parameter over processes, in one all-reduce.

        A parameter with no gradient on a process counts as a zero gradient there and keeps ``None`` where no
        process has one, as DDP does. Averaging after each backward pass is also right with gradient
        accumulation: the sum already averaged is the same on every process.
        """
        if self._sync is None:
            return
        params = [p for p in pl_module.parameters() if p.requires_grad]
        if not params:
            return
        grads = [p.grad for p in params]
        dtype = torch.promote_types(next((g.dtype for g in grads if g is not None), params[0].dtype), torch.float32)
        # Which parameters have a gradient here: a host list copied without waiting for the device.
        present = torch.tensor([float(g is not None) for g in grads], dtype=dtype).to(
            params[0].device, non_blocking=True
        )
        parts = [(g if g is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p, g in zip(params, grads)]
        flat = _reduce_mean(trainer, torch.cat([*parts, present]))
        sizes = [p.numel() for p in params]
        values, anywhere = flat[: sum(sizes)], flat[sum(sizes) :]
        for p, g, value, seen in zip(params, grads, torch.split(values, sizes), anywhere.unbind()):
            if g is not None:
                g.copy_(value.reshape(g.shape))
            elif bool(seen > 0):  # a host read, only for a parameter this process left without a gradient
                p.grad = value.reshape(p.shape).to(p.dtype)

    def exit(self) -> None:
        """Give the encoder back its gradients and DDP its all-reduce."""
        for p in self.frozen:
            p.requires_grad_(True)
        self.frozen = []
        if self._sync is not None:
            self._sync.close()
            self._sync = None
