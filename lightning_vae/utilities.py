"""Small helpers for callbacks and modules: whether this step logs and at which step, the data of a batch, finite
gradients. The private attributes of Lightning's trainer that the package reads are read here only."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_vae.data.common import unpack_batch


def logs_this_step(trainer: Any) -> bool:
    """Whether the loggers receive step values after the current (or next) training step.

    Lightning writes step values to the loggers only every ``log_every_n_steps``; a module or callback
    can skip its ``self.log`` calls on the other steps. Valid inside ``training_step`` and
    ``on_train_batch_start``. Without a trainer that can tell, the answer is ``True`` (log every step).

    Example::

        >>> logs_this_step(None)
        True
    """
    # The trainer's own test for logging steps (the one LearningRateMonitor uses); private, hence the fallback.
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def logging_step(trainer: Any) -> int:
    """The step Lightning writes logged values at right now: where a view drawn now lines up with the scalars.

    Lightning logs at its count of optimizer steps taken *before* the current batch finished, so the validation
    scalars of a check after step 100 are written at step 99, while ``trainer.global_step`` already reads 100.
    Images, histograms and heat maps written at this step sit on the same x as the ``val/...`` scalars in
    TensorBoard (and any other logger). Outside a fit loop it is ``trainer.global_step``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> logging_step(Trainer(logger=False, enable_checkpointing=False))
        0
    """
    # The counter Lightning's logger connector logs at (private, hence the fallback; tests/test_utilities.py
    # fails when Lightning renames it).
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else int(getattr(trainer, "global_step", 0))


def record_hparam(pl_module: Any, key: str, value: Any) -> bool:
    """Make a module's recorded hyperparameter ``key`` say ``value``: in what Lightning logs and what it saves.

    Lightning logs ``hparams_initial`` (``hparams.yaml``, TensorBoard's HPARAMS tab, MLflow's parameters) and saves
    ``hparams`` in checkpoints; a callback that fixes a value for the whole run (``FreeBits(0.1)``) records it in both,
    before Lightning logs them. Only a key the module already records is changed. Returns whether it was.

    Example::

        >>> from lightning.pytorch import LightningModule
        >>> class Module(LightningModule):
        ...     def __init__(self, free_bits: float = 0.0) -> None:
        ...         super().__init__()
        ...         self.save_hyperparameters()
        >>> module = Module()
        >>> record_hparam(module, "free_bits", 0.1), module.hparams_initial["free_bits"], module.hparams["free_bits"]
        (True, 0.1, 0.1)
    """
    hparams = getattr(pl_module, "hparams", None)
    if hparams is None or key not in hparams:
        return False
    hparams[key] = value
    initial = getattr(pl_module, "_hparams_initial", None)  # private to Lightning: what hparams_initial copies
    if initial is not None and key in initial:
        initial[key] = value
    return True


def batch_data(pl_module: Any, batch: Any) -> Tensor:
    """The data tensor of a batch, for callbacks that work on any module.

    ``pl_module.unpack_batch(batch)`` when the module has it (as ``VAE``), else
    :func:`lightning_vae.data.common.unpack_batch` (a tensor, an ``(x, y, ...)`` sequence or a dict).

    Raises:
        TypeError: When the batch is none of these; the message says to add ``unpack_batch``.
        ValueError: When a dict batch holds no tensor under the known keys.

    Example::

        >>> import torch
        >>> batch_data(object(), (torch.zeros(2, 3), torch.ones(2))).shape
        torch.Size([2, 3])
    """
    unpack = getattr(pl_module, "unpack_batch", None)
    if callable(unpack):
        return unpack(batch)
    try:
        return unpack_batch(batch)
    except TypeError as error:
        raise TypeError(f"{error}; or give the module an `unpack_batch(batch)` method that returns the data") from None


def grads_finite(grads: list[Tensor]) -> bool:
    """Whether every gradient tensor is finite: one fused norm per tensor and one host read for the lot.

    Example::

        >>> import torch
        >>> grads_finite([torch.ones(3), torch.zeros(2)]), grads_finite([torch.tensor([float("nan")])])
        (True, False)
    """
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
