"""Small numerically careful helpers shared by the objective, metrics and callbacks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lightning_vae.checks import check_int


def soft_clamp(x: Tensor, low: float, high: float) -> Tensor:
    """Clamp ``x`` to ``[low, high]`` smoothly, keeping a non-zero gradient everywhere.

    A smooth maximum with ``low`` followed by a smooth minimum with ``high``:
    ``-logaddexp(-logaddexp(x, low), -high)``, which is ``high - softplus(high - low - softplus(x - low))``.
    Inside the interval it differs from ``x`` by less than ``exp(-d)``, ``d`` the distance to the nearer bound
    (well inside, ``x`` itself in float32); it saturates at the bounds and is finite with finite gradients for
    any input, ``±inf`` included. Four elementwise operations.

    Example::

        >>> import torch
        >>> soft_clamp(torch.tensor([-1e4, 0.0, 1e4]), -10.0, 10.0)
        tensor([-10.,   0.,  10.])
    """
    if not low < high:
        raise ValueError(f"Expected `low` to be < `high`, got low={low}, high={high}")
    bounds = _constants(x, low, -high)
    return -torch.logaddexp(-torch.logaddexp(x, bounds[0]), bounds[1])


_CONSTANTS: dict[tuple[Any, ...], tuple[Tensor, ...]] = {}


def _constants(like: Tensor, *values: float) -> tuple[Tensor, ...]:
    """0-d tensors of ``values`` on ``like``'s device and dtype, made once per device, dtype and values."""
    key = (like.device, like.dtype, values)
    found = _CONSTANTS.get(key)
    if found is None:
        with torch.no_grad():
            found = tuple(torch.tensor(v, dtype=like.dtype, device=like.device) for v in values)
        _CONSTANTS[key] = found
    return found


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
