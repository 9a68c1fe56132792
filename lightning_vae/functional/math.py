"""Small numerically careful helpers shared by the objective, metrics and callbacks."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_vae.checks import check_int


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if its type is narrower (float16, bfloat16, integers, bool); float32 and float64 unchanged.

    The objective's type: half-precision network outputs are computed on in float32, and a model trained in
    float64 (``Trainer(precision="64-true")``) keeps float64 throughout.

    Example::

        >>> import torch
        >>> at_least_float32(torch.ones(1, dtype=torch.float16)).dtype, at_least_float32(torch.ones(1).double()).dtype
        (torch.float32, torch.float64)
    """
    return x if x.dtype in _WIDE else x.float()


_WIDE = (torch.float32, torch.float64)


def float32_region(device: torch.device) -> AbstractContextManager[None]:
    """Disable autocast on ``device``'s type, so what runs inside keeps its inputs' type (a no-op without autocast).

    The objective's exp/log/softplus run in float32 inside it, and so does the full-covariance posterior's
    ``L @ ε`` (autocast would run a matrix product in bfloat16 or float16).

    Example::

        >>> import torch
        >>> a = torch.ones(2, 2)
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), float32_region(a.device):
        ...     (a @ a).dtype
        torch.float32
    """
    return torch.autocast(device_type=device.type, enabled=False) if autocast_enabled(device) else _NO_REGION


def autocast_enabled(device: torch.device) -> bool:
    """Whether autocast is on for ``device``'s type (``False`` for a device type autocast does not know).

    Example::

        >>> import torch
        >>> autocast_enabled(torch.device("cpu"))
        False
    """
    try:
        return torch.is_autocast_enabled(device.type)
    except RuntimeError:  # a device type autocast does not know
        return False


_NO_REGION = nullcontext()  # reusable: entering it does nothing


def soft_clamp(x: Tensor, low: float, high: float) -> Tensor:
    """Clamp ``x`` to ``[low, high]`` smoothly, keeping a non-zero gradient everywhere.

    A smooth maximum with ``low`` followed by a smooth minimum with ``high``:
    ``high - softplus(high - low - softplus(x - low))``. Equal to
    ``low + softplus(x - low) - softplus(x - high)`` up to terms of order ``exp(low - high)``: the
    identity (up to rounding) well inside the interval, saturating at the bounds, finite for any
    finite input (e.g. log-variances of 1e4); five elementwise operations.

    Example::

        >>> import torch
        >>> soft_clamp(torch.tensor([-1e4, 0.0, 1e4]), -10.0, 10.0)
        tensor([-10.,   0.,  10.])
    """
    if not low < high:
        raise ValueError(f"Expected `low` to be < `high`, got low={low}, high={high}")
    return high - F.softplus((high - low) - F.softplus(x - low))


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """``log(mean(exp(x)))`` along ``dim`` without overflow.

    Example::

        >>> import torch
        >>> log_mean_exp(torch.tensor([0.0, 0.0, 0.0]))
        tensor(0.)
    """
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def bits_per_dim(nats: Tensor | float, num_dims: int) -> Tensor | float:
    """Convert nats per example to bits per data dimension: ``nats / (num_dims * ln 2)``.

    Example::

        >>> round(bits_per_dim(784 * math.log(2), 784), 6)
        1.0
    """
    check_int("num_dims", num_dims, low=1)
    return nats / (num_dims * math.log(2.0))
