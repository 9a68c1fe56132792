"""``AggressiveEncoderTraining``: the "lagging inference network" remedy for posterior collapse (He et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, cast

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, IterableDataset, Sampler
from typing_extensions import override

from lightning_vae.data.common import KeyedDataset, batch_key
from lightning_vae.metrics.collapse import MutualInformation
from lightning_vae.utilities import batch_data


def _positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int{' or None' if allow_none else ''}, got {value!r}")
    return value


class _KeyedShuffle(Sampler):
    """Shuffled ``(index, batch key)`` pairs for a :class:`~lightning_vae.data.common.KeyedDataset`.

    Each pass is a new order (seeded with ``seed`` and the pass number) with a key per batch of
    ``batch_size`` from :func:`~lightning_vae.data.common.batch_key`.
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


class AggressiveEncoderTraining(Callback):
    """Aggressive encoder training (He et al. 2019, "Lagging inference networks and posterior collapse").

    While active, before every training step the encoder alone is updated on fresh training batches
    (the current one first) until the inner loss stops improving: every ``check_every`` inner steps
    the mean loss of those steps is compared with that of the previous ``check_every``, and the loop
    ends when it got worse or after ``max_inner_steps``. The training step that follows then updates
    everything but the encoder (its gradients are dropped before the optimiser step), i.e. the
    decoder (and a learnable prior). At the end of every training epoch the mutual information
    I(x; z) is estimated on ``mi_batches`` fixed training batches; when it is lower than at the
    previous epoch (or after ``max_epochs`` aggressive epochs) the callback switches itself off and
    training continues as usual.

    Design: a callback on automatic optimisation. The inner updates use their own optimiser over
    the encoder's parameters (built by ``optimizer``, Adam with lr 1e-3 by default) and draw fresh
    batches from a second, shuffled ``DataLoader`` over the training loader's dataset (same batch
    size, collate function, workers and pinned memory). Under DDP the inner gradients are averaged
    over processes and the stopping decision uses the loss averaged over processes, so every process
    keeps the same encoder. An inner step whose gradient is NaN or inf is skipped (the encoder and
    the optimiser's state stay as they were; one host read per inner step, as a gradient scaler's);
    under 16-bit mixed precision the inner steps scale their loss with a ``GradScaler`` of their own
    (overflowing steps skipped, the scale lowered), and a NaN inner loss ends the inner loop. The
    inner optimiser's and scaler's state, the switch and the MI history are saved in the checkpoint.

    The module protocol (``VAE`` keeps it; any LightningModule can):

    - ``encoder`` and ``decoder`` attributes (``nn.Module``);
    - ``training_loss(batch) -> Tensor``: the loss its ``training_step`` minimises, without logging;
    - ``encode(x) -> Distribution`` (batch shape ``(B,)``, event ``(D,)``) and, unless the batch is
      the data tensor itself or a tuple starting with it, ``unpack_batch(batch) -> Tensor``.

    Logs ``aggressive/inner_steps`` (per step, while active), ``aggressive/mutual_info`` and
    ``aggressive/active`` (per epoch).

    Args:
        optimizer: Builds the encoder's inner optimiser from its parameters.
        max_inner_steps: Most encoder updates before each training step (100 in He et al.).
        check_every: Inner steps per window of the "stopped improving" test (15 in He et al.).
        mi_batches: Training batches on which I(x; z) is estimated at each epoch end.
        max_epochs: Switch off after this many aggressive epochs at most (``None``: only on MI).
        gradient_clip_val: Clip the inner gradients to this norm (He et al. use 5); ``None`` does not clip.
        seed: Seed of the fresh-batch order and of the fixed MI batches.

    Raises:
        ValueError: For non-positive counts or a non-positive clip value.
        TypeError: At fit start, for a module that does not keep the protocol or a training
            loader over an iterable-style dataset.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[AggressiveEncoderTraining(max_inner_steps=20, check_every=5)], logger=False)
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        max_inner_steps: int = 100,
        check_every: int = 15,
        mi_batches: int = 10,
        max_epochs: int | None = None,
        gradient_clip_val: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.max_inner_steps = _positive_int("max_inner_steps", max_inner_steps)
        self.check_every = _positive_int("check_every", check_every)
        self.mi_batches = _positive_int("mi_batches", mi_batches)
        self.max_epochs = _positive_int("max_epochs", max_epochs, allow_none=True)
        if gradient_clip_val is not None and (
            isinstance(gradient_clip_val, bool)
            or not isinstance(gradient_clip_val, (int, float))
            or not gradient_clip_val > 0
        ):
            raise ValueError(f"Expected `gradient_clip_val` to be a positive number or None, got {gradient_clip_val!r}")
        self.gradient_clip_val = gradient_clip_val
        self.seed = int(seed)

        self.active = True
        self.aggressive_epochs = 0
        self.previous_mi: float | None = None
        self.mi_history: list[float] = []
        self.inner_steps_total = 0
        self.last_inner_steps = 0
        #: Inner steps skipped for a NaN/inf gradient (an overflow under 16-bit mixed precision).
        self.skipped_inner_steps = 0
        self.switched_off_at_step: int | None = None

        self._optimizer: Optimizer | None = None
        self._pending_optimizer_state: dict[str, Any] | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._pending_scaler_state: dict[str, Any] | None = None
        self._fresh: Iterator[Any] | None = None
        self._fresh_loader: DataLoader | None = None

    # ------------------------------------------------------------------ protocol
    @staticmethod
    def _check_module(pl_module: LightningModule) -> None:
        missing = [name for name in ("encoder", "decoder") if not isinstance(getattr(pl_module, name, None), nn.Module)]
        missing += [name for name in ("training_loss", "encode") if not callable(getattr(pl_module, name, None))]
        if missing:
            raise TypeError(
                f"AggressiveEncoderTraining needs a module with `encoder` and `decoder` (nn.Modules), "
                f"`training_loss(batch)` and `encode(x)`; {type(pl_module).__name__} lacks {', '.join(missing)}"
            )

    @staticmethod
    def _encoder(pl_module: LightningModule) -> nn.Module:
        encoder = getattr(pl_module, "encoder", None)
        assert isinstance(encoder, nn.Module)
        return encoder

    def _encoder_params(self, pl_module: LightningModule) -> list[nn.Parameter]:
        return [p for p in self._encoder(pl_module).parameters() if p.requires_grad]

    def _get_optimizer(self, pl_module: LightningModule) -> Optimizer:
        if self._optimizer is None:
            self._optimizer = self.optimizer_factory(self._encoder_params(pl_module))
            if self._pending_optimizer_state is not None:
                self._optimizer.load_state_dict(self._pending_optimizer_state)
                self._pending_optimizer_state = None
        return self._optimizer

    # ------------------------------------------------------------------ fresh batches
    def _loader(self, trainer: Trainer, seed: int, persistent: bool = True) -> DataLoader:
        """A shuffled loader over the training loader's dataset, with its batch size, collate function, workers
        and pinned memory (``persistent``: keep the workers between passes, for the fresh batches)."""
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
            return DataLoader(loader.dataset, sampler=_KeyedShuffle(len(loader.dataset), batch_size, seed), **common)
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(loader.dataset, shuffle=True, generator=generator, **common)

    def _next_fresh(self, trainer: Trainer) -> Any:
        if self._fresh_loader is None:
            self._fresh_loader = self._loader(trainer, self.seed + 1 + trainer.global_rank + 7919 * trainer.global_step)
        if self._fresh is None:
            self._fresh = iter(self._fresh_loader)
        try:
            batch = next(self._fresh)
        except StopIteration:
            self._fresh = iter(self._fresh_loader)
            batch = next(self._fresh)
        return trainer.strategy.batch_to_device(batch)

    # ------------------------------------------------------------------ hooks
    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_module(pl_module)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.active:
            return
        steps = self._inner_loop(trainer, pl_module, batch)
        self.last_inner_steps = steps
        self.inner_steps_total += steps
        pl_module.log("aggressive/inner_steps", float(steps), on_step=True, on_epoch=False)

    def _reduce_mean(self, trainer: Trainer, value: Tensor) -> Tensor:
        return trainer.strategy.reduce(value, reduce_op="mean") if trainer.world_size > 1 else value

    def _inner_loop(self, trainer: Trainer, pl_module: LightningModule, batch: Any) -> int:
        optimizer = self._get_optimizer(pl_module)
        scaler = self._get_scaler(trainer, pl_module)
        params = self._encoder_params(pl_module)
        window: list[Tensor] = []
        previous = math.inf
        steps = 0
        current = batch
        with torch.enable_grad():
            while steps < self.max_inner_steps:
                with trainer.strategy.precision_plugin.forward_context():
                    loss = cast(Any, pl_module).training_loss(current)
                raw = torch.autograd.grad(scaler.scale(loss) if scaler is not None else loss, params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, raw)]
                if trainer.world_size > 1:
                    flat = self._reduce_mean(trainer, torch.cat([g.reshape(-1) for g in grads]))
                    grads = list(torch.split(flat, [g.numel() for g in grads]))
                for p, g in zip(params, grads):
                    p.grad = g.reshape(p.shape).to(p.dtype)
                stepped = self._step(optimizer, scaler, params)
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                if not stepped:
                    self.skipped_inner_steps += 1
                    if not bool(torch.isfinite(loss)):
                        # The loss itself is NaN/inf: the joint step that follows meets this batch (and the
                        # module's non-finite policy); more inner steps on it would only be skipped too.
                        break
                else:
                    window.append(loss.detach().float())
                if len(window) == self.check_every:
                    mean = float(self._reduce_mean(trainer, torch.stack(window).mean()))
                    if mean > previous:
                        break
                    previous, window = mean, []
                if steps < self.max_inner_steps:
                    current = self._next_fresh(trainer)
        return steps

    def _get_scaler(self, trainer: Trainer, pl_module: LightningModule) -> torch.amp.GradScaler | None:
        """A gradient scaler of the inner loop's own when the run scales its gradients (16-bit mixed precision)."""
        outer = getattr(trainer.precision_plugin, "scaler", None)
        if outer is None:
            return None
        if self._scaler is None:
            # Start at the run's current scale (one host read, once), so the first inner steps do not overflow
            # where the outer ones have already found their scale.
            self._scaler = torch.amp.GradScaler(pl_module.device.type, init_scale=float(outer.get_scale()))
            if self._pending_scaler_state is not None:
                self._scaler.load_state_dict(self._pending_scaler_state)
                self._pending_scaler_state = None
        return self._scaler

    def _step(self, optimizer: Optimizer, scaler: torch.amp.GradScaler | None, params: list[nn.Parameter]) -> bool:
        """Step the inner optimiser unless a gradient is NaN/inf; return whether it stepped.

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
        grads = [p.grad for p in params if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            return False
        if self.gradient_clip_val is not None:
            torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
        optimizer.step()
        return True

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if self.active:  # the outer step updates the decoder only; the encoder had its inner steps
            for p in self._encoder(pl_module).parameters():
                p.grad = None

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active:
            return
        self.aggressive_epochs += 1
        mi = self._mutual_information(trainer, pl_module)
        self.mi_history.append(mi)
        pl_module.log("aggressive/mutual_info", mi, sync_dist=True)  # equal on every rank already
        reason = None
        if self.previous_mi is not None and mi < self.previous_mi:
            reason = f"I(x; z) stopped improving ({mi:.3f} < {self.previous_mi:.3f} nats)"
        elif self.max_epochs is not None and self.aggressive_epochs >= self.max_epochs:
            reason = f"max_epochs={self.max_epochs} aggressive epochs done"
        self.previous_mi = mi
        if reason is not None:
            self.active = False
            self.switched_off_at_step = trainer.global_step
            self._fresh = self._fresh_loader = None
            rank_zero_info(
                f"AggressiveEncoderTraining: switched off after {self.aggressive_epochs} epochs (step "
                f"{trainer.global_step}): {reason}; training continues with joint updates."
            )
        pl_module.log("aggressive/active", float(self.active), sync_dist=True)

    def _mutual_information(self, trainer: Trainer, pl_module: LightningModule) -> float:
        """I(x; z) on ``mi_batches`` fixed training batches with fixed posterior samples (the same every epoch)."""
        metric = MutualInformation().to(pl_module.device)
        loader = self._loader(trainer, self.seed, persistent=False)
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        was_training = pl_module.training
        pl_module.eval()
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.seed)
            for i, batch in enumerate(loader):
                if i >= self.mi_batches:
                    break
                x = batch_data(pl_module, trainer.strategy.batch_to_device(batch))
                metric.update(cast(Any, pl_module).encode(x))
        pl_module.train(was_training)
        return float(metric.compute())

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        optimizer_state = self._optimizer.state_dict() if self._optimizer is not None else self._pending_optimizer_state
        return {
            "active": self.active,
            "aggressive_epochs": self.aggressive_epochs,
            "previous_mi": self.previous_mi,
            "mi_history": list(self.mi_history),
            "inner_steps_total": self.inner_steps_total,
            "switched_off_at_step": self.switched_off_at_step,
            "optimizer": optimizer_state,
            "skipped_inner_steps": self.skipped_inner_steps,
            "scaler": self._scaler.state_dict() if self._scaler is not None else self._pending_scaler_state,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.active = bool(state_dict.get("active", True))
        self.aggressive_epochs = int(state_dict.get("aggressive_epochs", 0))
        self.previous_mi = state_dict.get("previous_mi")
        self.mi_history = list(state_dict.get("mi_history", []))
        self.inner_steps_total = int(state_dict.get("inner_steps_total", 0))
        self.switched_off_at_step = state_dict.get("switched_off_at_step")
        self._pending_optimizer_state = state_dict.get("optimizer")
        self._optimizer = None
        self.skipped_inner_steps = int(state_dict.get("skipped_inner_steps", 0))
        self._pending_scaler_state = state_dict.get("scaler")
        self._scaler = None


__all__ = ["AggressiveEncoderTraining"]
