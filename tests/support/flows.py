"""Flows the flow tests share: planar and IAF steps far from the identity, in float64, and the autograd
log-determinant they are checked against."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.functional import jacobian

from lightning_vae.distributions import IAFStep, PlanarFlow
from lightning_vae.nets.made import Order


def planar(dim: int, seed: int) -> PlanarFlow:
    torch.manual_seed(seed)
    flow = PlanarFlow(dim).double()
    with torch.no_grad():  # parameters large enough that the map is far from the identity
        flow.u.normal_(0.0, 1.5)
        flow.w.normal_(0.0, 1.5)
        flow.b.fill_(0.3)
    return flow


def iaf(dim: int, context_dim: int, order: Order, seed: int) -> IAFStep:
    torch.manual_seed(seed)
    step = IAFStep(dim, hidden_sizes=(16, 16), context_dim=context_dim, order=order, forget_bias=0.0).double()
    with torch.no_grad():
        for p in step.parameters():
            p.mul_(3.0)  # σ well away from 1 and m far from 0
    return step


def autograd_log_det(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """``log |det ∂fn/∂z|`` from the autograd Jacobian; every flow here preserves orientation."""
    sign, log_abs = torch.linalg.slogdet(jacobian(fn, z))
    assert sign > 0
    return log_abs
