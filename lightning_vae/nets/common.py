"""Helpers shared by the reference networks."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lightning_vae.checks import check_choice

Activation = Literal["relu", "elu", "gelu", "silu", "tanh", "leaky_relu", "softplus"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
}


def make_activation(name: Activation) -> nn.Module:
    """Instantiate an activation by name (one of :data:`Activation`).

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is not one of the activations.

    Example::

        >>> make_activation("silu")
        SiLU()
    """
    return _ACTIVATIONS[check_choice("activation", name, Activation)]()


def as_params(out: Tensor, lead: tuple[int, ...], params_per_element: int, shape: tuple[int, ...]) -> Tensor:
    """A decoder's flat output as likelihood parameters: ``(*lead, *shape)``, or ``(*lead, params_per_element,
    *shape)`` when there are several parameters per data element.

    Args:
        out: The output, ``prod(lead) * params_per_element * prod(shape)`` numbers.
        lead: The leading dimensions of the latents it was made from (``z.shape[:-1]``).
        params_per_element: Parameters per data element.
        shape: Shape of one example.

    Example::

        >>> import torch
        >>> as_params(torch.zeros(2, 3 * 4), (2,), 3, (4,)).shape
        torch.Size([2, 3, 4])
    """
    if params_per_element == 1:
        return out.view(*lead, *shape)
    return out.view(*lead, params_per_element, *shape)
