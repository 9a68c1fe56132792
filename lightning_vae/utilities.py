"""Small helpers over Lightning internals, kept in one place."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def logs_this_step(trainer: Any) -> bool:
    """Whether the loggers receive step values after the current (or next) training step.

    ``self.log`` costs hundreds of microseconds of Python per call on a CPU, several percent of a
    small model's step when a handful of keys are logged every step. Lightning writes step values to
    the loggers only every ``log_every_n_steps``, so logging on the other steps is wasted; this asks
    Lightning's own test (the one ``LearningRateMonitor`` uses, valid inside ``training_step`` and
    ``on_train_batch_start``). Without a trainer, or if a future Lightning drops the attribute, the
    answer is ``True`` (log every step: correct, only slower).
    """
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def batch_data(pl_module: Any, batch: Any) -> Tensor:
    """The data tensor of a batch, for callbacks that work on any module.

    ``pl_module.unpack_batch(batch)`` when the module has it (as ``VAE``), else the batch itself when
    it is a tensor, else the first element of a tuple or list.

    Raises:
        TypeError: When the data cannot be found; the message says to add ``unpack_batch``.
    """
    unpack = getattr(pl_module, "unpack_batch", None)
    if callable(unpack):
        return unpack(batch)
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(
        f"Cannot find the data in a batch of type {type(batch).__name__}; "
        "give the module an `unpack_batch(batch)` method that returns it"
    )
