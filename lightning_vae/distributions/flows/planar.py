"""Planar flows (Rezende & Mohamed 2015): ``f(z) = z + û · tanh(wᵀz + b)`` with ``û`` constrained so ``f`` inverts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_vae.checks import check_float, check_int
from lightning_vae.distributions.flows.base import Flow


class PlanarFlow(Flow):
    """``f(z) = z + û tanh(wᵀz + b)``, ``log |det ∂f/∂z| = log(1 + (1 - tanh²(wᵀz + b)) wᵀû)``.

    ``f`` is invertible when ``wᵀû ≥ -1`` (Rezende & Mohamed 2015, appendix A). The free parameter ``u`` is
    mapped to ``û = u + (m(wᵀu) - wᵀu) · w / |w|²`` with ``m(a) = -1 + softplus(a)``, so ``wᵀû = m(wᵀu) > -1``
    for any ``u`` and the determinant ``1 + h' wᵀû ≥ min(1, softplus(wᵀu))`` is positive; its log is computed
    as ``log1p(h' · wᵀû)``. ``|w|²`` is floored at ``1e-12`` so ``w = 0`` (the identity map) is safe. The
    parameters are global (shared by every example), learned with the model.

    Args:
        dim: Size D of ``z``.
        init_scale: Standard deviation of the initial ``u`` and ``w`` (``b`` starts at 0).

    Example::

        >>> import torch
        >>> flow = PlanarFlow(2)
        >>> z, log_det = flow(torch.randn(5, 2))
        >>> z.shape, log_det.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, dim: int, init_scale: float = 0.01) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, low=1)
        scale = check_float("init_scale", init_scale, low=0.0)
        self.u = nn.Parameter(scale * torch.randn(dim))
        self.w = nn.Parameter(scale * torch.randn(dim))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> Tensor:
        """The constrained ``û`` (``wᵀû = -1 + softplus(wᵀu) > -1``)."""
        wu = (self.w * self.u).sum()
        return self.u + (F.softplus(wu) - 1.0 - wu) * self.w / self.w.square().sum().clamp_min(1e-12)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(f(z), log |det ∂f/∂z|)`` for ``z`` of shape ``(..., D)``; ``context`` is ignored."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"PlanarFlow expects samples of shape (..., {self.dim}), got {tuple(z.shape)}")
        u_hat = self.u_hat()
        h = torch.tanh(z @ self.w + self.b)
        log_det = torch.log1p((1.0 - h.square()) * (self.w * u_hat).sum())
        return z + h.unsqueeze(-1) * u_hat, log_det

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


__all__ = ["PlanarFlow"]
