"""Helpers shared by the reference networks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

Activation = Literal["relu", "elu", "gelu", "silu", "tanh", "leaky_relu"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """Instantiate an activation by name; raise ``ValueError`` naming the choices otherwise."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"Expected `activation` to be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive int, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
    return value


def check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive ints, else raise ``ValueError`` naming ``name``."""
    if isinstance(shape, int) or not all(isinstance(s, int) and s > 0 for s in shape) or len(shape) == 0:
        raise ValueError(f"Expected `{name}` to be a non-empty sequence of positive ints, got {shape!r}")
    return tuple(shape)
