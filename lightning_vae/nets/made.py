"""MADE (Germain et al. 2015): a masked autoencoder whose ``i``-th outputs depend only on the inputs before ``i``.

The autoregressive network of inverse autoregressive flow steps
(:class:`~lightning_vae.distributions.flows.IAFStep`). Every input gets a degree (its position in the order),
every hidden unit a degree, and a connection is kept only where it cannot carry information from an input to an
output of the same or an earlier position. An optional context vector (e.g. the encoder's ``h``) enters the
first hidden layer unmasked, so every output may depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn

from lightning_vae.checks import check_choice, check_int, check_shape
from lightning_vae.nets.common import Activation, make_activation

Order = Literal["natural", "reversed"]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 ``mask`` of shape ``(out_features, in_features)``.

    Example::

        >>> import torch
        >>> layer = MaskedLinear(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        >>> layer.weight.shape
        torch.Size([2, 2])
    """

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def input_degrees(dim: int, order: Order) -> Tensor:
    """The position of each input in the autoregressive order, ``1..dim``.

    Example::

        >>> input_degrees(3, "reversed")
        tensor([3, 2, 1])
    """
    degrees = torch.arange(1, dim + 1)
    return degrees if order == "natural" else degrees.flip(0)


class MADE(HyperparametersMixin, nn.Module):
    """Map ``z`` of shape ``(..., D)`` (and a context ``h``) to ``n_params`` outputs per dimension, autoregressively.

    Output ``j`` of dimension ``i`` (``out[..., j * D + i]``) depends on ``z_k`` only for ``k`` before ``i`` in
    the order (and on the whole context). Hidden degrees are assigned cyclically (deterministic); units of degree
    0 see only the context.

    Args:
        dim: Size D of ``z``.
        hidden_sizes: Widths of the hidden layers (at least one).
        n_params: Outputs per dimension (2 for an IAF step's ``m`` and ``s``).
        context_dim: Size of the context ``h``; 0 for none.
        order: ``"natural"`` (``z_1`` first) or ``"reversed"`` (``z_D`` first).
        activation: Nonlinearity between layers.

    Example::

        >>> import torch
        >>> made = MADE(3, hidden_sizes=(16,), n_params=2)
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 6])
    """

    def __init__(
        self,
        dim: int,
        hidden_sizes: Sequence[int] = (64,),
        n_params: int = 2,
        context_dim: int = 0,
        order: Order = "natural",
        activation: Activation = "elu",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dim = check_int("dim", dim, low=1)
        self.n_params = check_int("n_params", n_params, low=1)
        self.context_dim = check_int("context_dim", context_dim, low=0)
        self.order: Order = check_choice("order", order, Order)
        hidden = list(check_shape("hidden_sizes", hidden_sizes))
        inputs = input_degrees(dim, order)
        low = 0 if context_dim > 0 or dim == 1 else 1
        degrees = [inputs] + [low + torch.arange(width) % max(dim - low, 1) for width in hidden]
        layers: list[nn.Module] = []
        for i, (before, after) in enumerate(zip(degrees[:-1], degrees[1:])):
            if i > 0:
                layers.append(make_activation(activation))
            layers.append(MaskedLinear((after[:, None] >= before[None, :]).float()))
        self.hidden = nn.Sequential(*layers)
        self.act = make_activation(activation)
        self.context = nn.Linear(context_dim, hidden[0], bias=False) if context_dim > 0 else None
        out_degrees = inputs.repeat(n_params)
        self.out = MaskedLinear((out_degrees[:, None] > degrees[-1][None, :]).float())

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        if z.shape[-1] != self.dim:
            raise ValueError(f"MADE expects inputs of shape (..., {self.dim}), got {tuple(z.shape)}")
        first, rest = self.hidden[0], self.hidden[1:]
        a = first(z)
        if self.context is not None:
            if context is None:
                raise ValueError(f"This MADE takes a context of size {self.context_dim}: call made(z, context)")
            a = a + self.context(context)
        elif context is not None:
            raise ValueError("This MADE was built with context_dim=0 and takes no context")
        return self.out(self.act(rest(a)))


__all__ = ["MADE", "MaskedLinear", "Order", "input_degrees"]
