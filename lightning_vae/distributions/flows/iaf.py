"""Inverse autoregressive flow steps (Kingma et al. 2016) over a MADE network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_vae.checks import check_float, check_int
from lightning_vae.distributions.flows.base import Flow
from lightning_vae.nets.made import MADE, Order


class IAFStep(Flow):
    """One IAF step: ``(m, s) = MADE(z, h)``, ``σ = sigmoid(s + forget_bias)``, ``z' = σ ⊙ z + (1 - σ) ⊙ m``.

    The numerically stable update of Kingma et al. (2016): ``m_i`` and ``s_i`` depend on ``z`` only through the
    dimensions before ``i`` in the step's ``order``, so the Jacobian is triangular in that order (lower for
    ``"natural"``, upper for ``"reversed"``) with diagonal ``σ``, and ``log |det| = Σ_i log σ_i`` (computed as
    ``logsigmoid``). Alternate the order between steps so every dimension can depend on every other.
    ``forget_bias`` starts ``σ`` near 1 (``sigmoid(2) ≈ 0.88``; Kingma et al. start ``s`` near +1 or +2), so a new
    step stays close to the identity: at the start the steps scale ``z`` by about ``Π σ``, and a smaller bias
    (``σ ≈ 0.73`` at +1) shrinks a stack of steps enough to slow training.

    Args:
        dim: Size D of ``z``.
        hidden_sizes: Hidden widths of the MADE.
        context_dim: Size of the context ``h`` (from the encoder), 0 for none.
        order: ``"natural"`` or ``"reversed"``.
        forget_bias: Added to ``s`` before the sigmoid.

    Example::

        >>> import torch
        >>> step = IAFStep(3, hidden_sizes=(16,), context_dim=4)
        >>> z, log_det = step(torch.randn(2, 5, 3), torch.randn(5, 4))  # samples (k, B, D), context (B, C)
        >>> z.shape, log_det.shape
        (torch.Size([2, 5, 3]), torch.Size([2, 5]))
    """

    def __init__(
        self,
        dim: int,
        hidden_sizes: Sequence[int] = (64,),
        context_dim: int = 0,
        order: Order = "natural",
        forget_bias: float = 2.0,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, low=1)
        self.made = MADE(dim, hidden_sizes, n_params=2, context_dim=context_dim, order=order)
        self.forget_bias = check_float("forget_bias", forget_bias)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(z', Σ log σ)`` for ``z`` of shape ``(..., D)`` and a context broadcasting against ``z.shape[:-1]``."""
        m, s = self.made(z, context).chunk(2, dim=-1)
        s = s + self.forget_bias
        sigma = torch.sigmoid(s)
        return sigma * z + (1.0 - sigma) * m, F.logsigmoid(s).sum(-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, order={self.made.order!r}"


def iaf_steps(
    dim: int, n_steps: int, hidden_sizes: Sequence[int] = (64,), context_dim: int = 0, forget_bias: float = 2.0
) -> list[IAFStep]:
    """``n_steps`` IAF steps whose order alternates, natural first (the arguments as :class:`IAFStep`'s).

    Example::

        >>> [step.made.order for step in iaf_steps(2, 3, hidden_sizes=(8,))]
        ['natural', 'reversed', 'natural']
    """
    check_int("n_steps", n_steps, low=0)
    orders: tuple[Order, Order] = ("natural", "reversed")
    return [IAFStep(dim, hidden_sizes, context_dim, orders[i % 2], forget_bias) for i in range(n_steps)]


__all__ = ["IAFStep", "iaf_steps"]
