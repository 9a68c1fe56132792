"""Helpers shared by the reference networks."""

from __future__ import annotations

from typing import Literal

from torch import nn

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
