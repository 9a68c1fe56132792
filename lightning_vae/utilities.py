"""Small helpers for callbacks and modules: whether this step logs, the data tensor of a batch, finite gradients,
values to log copied to the host at once."""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce
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


def to_host(values: Mapping[str, Tensor], extra: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor | None]:
    """Copy one-element tensors (and the values of ``extra``) to the host in one device-to-host copy.

    A logger turns each tensor it gets into a number, and on an accelerator each such read waits for the device:
    stacked, the values of a logging step cost one wait. They come back in their common type (float64 if any is).

    Returns:
        The values by name as host tensors of one element, and ``extra`` on the host (``None`` without it).

    Example::

        >>> host, flags = to_host({"a": torch.tensor(1.0), "b": torch.tensor([2.0])}, torch.tensor([1.0, 0.0]))
        >>> host, flags
        ({'a': tensor(1.), 'b': tensor(2.)}, tensor([1., 0.]))
    """
    tensors = [v.detach().reshape(1) for v in values.values()]
    if extra is not None:
        tensors.append(extra.detach().reshape(-1))
    if not tensors:
        return {}, None
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors))
    host = torch.cat([t.to(dtype) for t in tensors]).cpu()
    n = len(values)
    return dict(zip(values, host[:n].unbind())), None if extra is None else host[n:]
