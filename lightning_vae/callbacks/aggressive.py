"""``AggressiveEncoderTraining``: the "lagging inference network" remedy for posterior collapse (He et al. 2019)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_vae.callbacks.encoder_updates import (
    EncoderUpdates,
    StepWithoutEncoder,
    encoder_parameters,
    fresh_loader,
)
from lightning_vae.checks import check_float, check_int, check_type
from lightning_vae.metrics.collapse import MutualInformation
from lightning_vae.protocols import SupportsTrainingLoss, require
from lightning_vae.utilities import batch_data


class AggressiveEncoderTraining(Callback):
    """Aggressive encoder training (He et al. 2019, "Lagging inference networks and posterior collapse").

    While active, before every training step the encoder alone is updated on fresh training batches
    (the current one first) until the inner loss stops improving: every ``check_every`` inner steps
    the mean loss of those steps is compared with that of the previous ``check_every``, and the loop
    ends when it got worse or after ``max_inner_steps``. The training step that follows then updates
    everything but the encoder, i.e. the decoder (and a learnable prior): on one device or under DDP
    the encoder's parameters sit out its backward pass
    (:class:`~lightning_vae.callbacks.encoder_updates.StepWithoutEncoder`: no encoder gradient is
    computed or all-reduced, and a 16-bit overflow there cannot skip the decoder's step or lower the
    run's gradient scale); with other strategies their gradients are dropped before the optimiser
    step. At the end of every training epoch the mutual information I(x; z) is estimated on
    ``mi_batches`` fixed training batches; when it is lower than at the previous epoch (or after
    ``max_epochs`` aggressive epochs) the callback switches itself off and training continues as usual.

    Design: a callback on automatic optimisation. The inner updates
    (:class:`~lightning_vae.callbacks.encoder_updates.EncoderUpdates`) use their own optimiser over the
    encoder's parameters (built by ``optimizer``, Adam with lr 1e-3 by default) and draw fresh batches
    from a second, shuffled ``DataLoader`` over the training loader's dataset (same batch size, collate
    function, workers and pinned memory). Under DDP the inner gradients and the stopping decision's loss
    are averaged over processes, so every process keeps the same encoder. An inner step whose gradient is
    NaN or inf is skipped (one host read per inner step, as a gradient scaler's); under 16-bit mixed
    precision the inner steps scale their loss with a ``GradScaler`` of their own, and a NaN inner loss
    ends the inner loop. The inner optimiser's and scaler's state, the switch and the MI history are
    saved in the checkpoint.

    The module protocol (``VAE`` keeps it; any LightningModule can):

    - ``encoder`` and ``decoder`` attributes (``nn.Module``);
    - ``training_loss(batch) -> Tensor``: the loss its ``training_step`` minimises, without logging;
    - ``encode(x) -> Distribution`` (batch shape ``(B,)``, event ``(D,)``) and, unless the batch is
      the data tensor itself or a tuple starting with it, ``read_batch(batch) -> Batch``.

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
        ValueError: For counts below 1 or a clip value that is not a positive finite number.
        TypeError: For a count that is not an int or a clip value that is not a number; at fit start, for
            a module that does not keep the protocol
            (:class:`~lightning_vae.protocols.SupportsTrainingLoss`) or a training loader over an
            iterable-style dataset.

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
        self.max_inner_steps = check_int("max_inner_steps", max_inner_steps, low=1)
        self.check_every = check_int("check_every", check_every, low=1)
        self.mi_batches = check_int("mi_batches", mi_batches, low=1)
        self.max_epochs = None if max_epochs is None else check_int("max_epochs", max_epochs, low=1)
        if gradient_clip_val is not None:
            gradient_clip_val = check_float("gradient_clip_val", gradient_clip_val, low=0.0, strict_low=True)
        self.gradient_clip_val = gradient_clip_val
        self.seed = check_int("seed", seed)
        #: The inner loop: the encoder's own optimiser and gradient scaler, and the count of skipped steps.
        self.updates = EncoderUpdates(optimizer, self.max_inner_steps, self.check_every, gradient_clip_val)
        #: The outer step without the encoder.
        self.outer = StepWithoutEncoder()

        self.active = True
        self.aggressive_epochs = 0
        self.previous_mi: float | None = None
        self.mi_history: list[float] = []
        self.inner_steps_total = 0
        self.last_inner_steps = 0
        self.switched_off_at_step: int | None = None

        self._fresh: Iterator[Any] | None = None
        self._fresh_loader: DataLoader | None = None

    @property
    def skipped_inner_steps(self) -> int:
        """Inner steps skipped for a NaN/inf gradient (an overflow under 16-bit mixed precision)."""
        return self.updates.skipped

    # ------------------------------------------------------------------ protocol and fresh batches
    @staticmethod
    def _check_module(pl_module: LightningModule) -> None:
        require(pl_module, SupportsTrainingLoss, "AggressiveEncoderTraining")
        for name in ("encoder", "decoder"):
            check_type(f"{type(pl_module).__name__}.{name}", getattr(pl_module, name), nn.Module, "a torch.nn.Module")

    def _next_fresh(self, trainer: Trainer) -> Any:
        if self._fresh_loader is None:
            self._fresh_loader = fresh_loader(trainer, self.seed + 1 + trainer.global_rank + 7919 * trainer.global_step)
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
        steps = self.updates.run(trainer, pl_module, batch, lambda: self._next_fresh(trainer))
        self.last_inner_steps = steps
        self.inner_steps_total += steps
        pl_module.log("aggressive/inner_steps", float(steps), on_step=True, on_epoch=False)
        self.outer.enter(trainer, pl_module)  # the outer step updates the decoder only

    @override
    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.outer.after_backward(trainer, pl_module)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if self.active and not self.outer.active:  # strategies the encoder could not sit out: drop its gradients
            for p in encoder_parameters(pl_module):
                p.grad = None

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.outer.exit()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.outer.exit()

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
        loader = fresh_loader(trainer, self.seed, persistent=False)
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
        return {
            "active": self.active,
            "aggressive_epochs": self.aggressive_epochs,
            "previous_mi": self.previous_mi,
            "mi_history": list(self.mi_history),
            "inner_steps_total": self.inner_steps_total,
            "switched_off_at_step": self.switched_off_at_step,
            **self.updates.state_dict(),  # "optimizer", "scaler", "skipped_inner_steps"
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.active = bool(state_dict.get("active", True))
        self.aggressive_epochs = int(state_dict.get("aggressive_epochs", 0))
        self.previous_mi = state_dict.get("previous_mi")
        self.mi_history = list(state_dict.get("mi_history", []))
        self.inner_steps_total = int(state_dict.get("inner_steps_total", 0))
        self.switched_off_at_step = state_dict.get("switched_off_at_step")
        self.updates.load_state_dict(state_dict)


__all__ = ["AggressiveEncoderTraining"]
