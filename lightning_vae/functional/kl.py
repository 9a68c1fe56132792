"""Closed-form KL divergences between diagonal Gaussians, written once for the whole package."""

from __future__ import annotations

import math

import torch
from torch import Tensor

_SQRT_HALF = math.sqrt(0.5)


def gaussian_kl(
    loc_q: Tensor, log_var_q: Tensor, loc_p: Tensor | None = None, log_var_p: Tensor | None = None
) -> Tensor:
    """Elementwise ``KL(N(loc_q, exp(log_var_q)) || N(loc_p, exp(log_var_p)))`` in nats.

    With ``loc_p`` and ``log_var_p`` left out the prior is the standard normal:
    ``0.5 * (exp(log_var_q) + loc_q**2 - 1 - log_var_q)``. Nothing is summed: the result has the
    broadcast shape of the inputs, so callers decide which dimensions to reduce.

    Computed as ``0.5 * (expm1(δ) - δ) + 0.5 * ((loc_q - loc_p) * exp(-log_var_p / 2))**2`` with
    ``δ = log_var_q - log_var_p``: no cancellation between ``exp(δ) - 1`` and ``δ`` for nearly equal
    variances, and the mean term is standardised before it is squared, so it overflows only where the
    KL itself exceeds the float32 range (``|Δloc| > 1.8e19`` with a wide prior stays finite). The
    result is non-negative for any finite input.

    Args:
        loc_q: Mean of q.
        log_var_q: Log-variance of q.
        loc_p: Mean of p (default 0).
        log_var_p: Log-variance of p (default 0).

    Example::

        >>> import torch
        >>> gaussian_kl(torch.zeros(3), torch.zeros(3))
        tensor([0., 0., 0.])
    """
    if loc_p is None and log_var_p is None:
        # value * loc * loc evaluates left to right: no overflow before the KL itself exceeds the float range.
        return torch.addcmul(0.5 * (torch.expm1(log_var_q) - log_var_q), loc_q, loc_q, value=0.5)
    if loc_p is None:
        loc_p = torch.zeros_like(loc_q)
    if log_var_p is None:
        log_var_p = torch.zeros_like(log_var_q)
    delta = log_var_q - log_var_p
    return 0.5 * (torch.expm1(delta) - delta) + ((loc_q - loc_p) * torch.exp(-0.5 * log_var_p) * _SQRT_HALF).pow(2)


def kl_per_dim(kl: Tensor) -> Tensor:
    """Average an elementwise KL of shape ``(..., B, D)`` over every axis but the last: ``(D,)``.

    This is the batch-averaged KL of each latent dimension that free bits (Kingma et al. 2016)
    clamp and that the collapse monitors report.
    """
    return kl.reshape(-1, kl.shape[-1]).mean(dim=0)
