"""Fully connected encoder and decoder for any data shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn

from lightning_vae.checks import check_int, check_shape
from lightning_vae.nets.common import Activation, as_params, make_activation


def _hidden(sizes: Sequence[int]) -> list[int]:
    """The hidden widths, checked: a sequence of ints >= 1 (empty for no hidden layer)."""
    return [] if isinstance(sizes, Sequence) and len(sizes) == 0 else list(check_shape("hidden_sizes", sizes))


def _mlp(sizes: Sequence[int], activation: Activation) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), make_activation(activation)]
    return nn.Sequential(*layers)


def _body_and_head(
    n_in: int, hidden_sizes: Sequence[int], n_out: int, activation: Activation
) -> tuple[nn.Sequential, nn.Linear]:
    """The hidden layers from ``n_in`` inputs (each followed by the activation) and the linear head to ``n_out``."""
    hidden = _hidden(hidden_sizes)
    return _mlp([n_in, *hidden], activation), nn.Linear(hidden[-1] if hidden else n_in, n_out)


class MLPEncoder(HyperparametersMixin, nn.Module):
    """Flatten ``x`` and map it through hidden layers to ``(loc, log_var)`` of size ``latent_dim``.

    Args:
        input_shape: Shape of one example, e.g. ``(1, 28, 28)``.
        latent_dim: Size D of z.
        hidden_sizes: Widths of the hidden layers.
        activation: Nonlinearity between layers.

    Example::

        >>> import torch
        >>> loc, log_var = MLPEncoder((1, 28, 28), latent_dim=20, hidden_sizes=(400,))(torch.rand(8, 1, 28, 28))
        >>> loc.shape, log_var.shape
        (torch.Size([8, 20]), torch.Size([8, 20]))
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 20,
        hidden_sizes: Sequence[int] = (400,),
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_shape = check_shape("input_shape", input_shape)
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.body, self.head = _body_and_head(math.prod(self.input_shape), hidden_sizes, 2 * latent_dim, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"MLPEncoder expects examples of shape (B, *{self.input_shape}), got {tuple(x.shape)}")
        h = self.head(self.body(x.flatten(1)))
        loc, log_var = h.chunk(2, dim=-1)
        return loc, log_var


class MLPDecoder(HyperparametersMixin, nn.Module):
    """Map z through hidden layers to likelihood parameters of shape ``(params_per_element, *output_shape)``.

    Args:
        latent_dim: Size D of z.
        output_shape: Shape of one example, e.g. ``(1, 28, 28)``.
        hidden_sizes: Widths of the hidden layers.
        activation: Nonlinearity between layers.
        params_per_element: Parameters per data element: 1 for Bernoulli/Gaussian/Laplace, 256 for
            the categorical likelihood, ``3 * n_components`` for the logistic mixture. When above 1
            the output has shape ``(B, params_per_element, *output_shape)``.

    Example::

        >>> import torch
        >>> MLPDecoder(20, (1, 28, 28), hidden_sizes=(400,))(torch.randn(8, 20)).shape
        torch.Size([8, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int = 20,
        output_shape: Sequence[int] = (1, 28, 28),
        hidden_sizes: Sequence[int] = (400,),
        activation: Activation = "relu",
        params_per_element: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.output_shape = check_shape("output_shape", output_shape)
        self.params_per_element = check_int("params_per_element", params_per_element, low=1)
        n_out = params_per_element * math.prod(self.output_shape)
        self.body, self.head = _body_and_head(latent_dim, hidden_sizes, n_out, activation)

    def forward(self, z: Tensor) -> Tensor:
        return as_params(self.head(self.body(z)), z.shape[:-1], self.params_per_element, self.output_shape)


class ConditionalMLPEncoder(HyperparametersMixin, nn.Module):
    """``(x, c) -> (loc, log_var)``: the flattened data and a context vector through one MLP (q(z | x, c)).

    The context ``c`` is what a conditional model makes of its context: a one-hot label, a label embedding or a
    feature vector, ``(B, context_dim)``.

    Args:
        input_shape: Shape of one example, e.g. ``(1, 28, 28)``.
        context_dim: Size of the context vector.
        latent_dim: Size D of z.
        hidden_sizes: Widths of the hidden layers.
        activation: Nonlinearity between layers.

    Example::

        >>> import torch
        >>> enc = ConditionalMLPEncoder((1, 28, 28), context_dim=10, latent_dim=8)
        >>> loc, log_var = enc(torch.rand(4, 1, 28, 28), torch.eye(10)[:4])
        >>> loc.shape, log_var.shape
        (torch.Size([4, 8]), torch.Size([4, 8]))
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        context_dim: int = 10,
        latent_dim: int = 20,
        hidden_sizes: Sequence[int] = (400,),
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_shape = check_shape("input_shape", input_shape)
        self.context_dim = check_int("context_dim", context_dim, low=1)
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        n_in = math.prod(self.input_shape) + self.context_dim
        self.body, self.head = _body_and_head(n_in, hidden_sizes, 2 * latent_dim, activation)

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"ConditionalMLPEncoder expects examples of shape (B, *{self.input_shape}), got {tuple(x.shape)}"
            )
        h = self.head(self.body(torch.cat([x.flatten(1), context.to(x.dtype)], dim=-1)))
        loc, log_var = h.chunk(2, dim=-1)
        return loc, log_var


class ConditionalMLPDecoder(HyperparametersMixin, nn.Module):
    """``(z, c) -> likelihood parameters``: the latent and a context vector through one MLP (p(x | z, c)).

    Args:
        latent_dim: Size D of z.
        context_dim: Size of the context vector.
        output_shape: Shape of one example.
        hidden_sizes: Widths of the hidden layers.
        activation: Nonlinearity between layers.
        params_per_element: Parameters per data element (see :class:`MLPDecoder`).

    Example::

        >>> import torch
        >>> ConditionalMLPDecoder(8, 10, (1, 28, 28))(torch.randn(4, 8), torch.eye(10)[:4]).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int = 20,
        context_dim: int = 10,
        output_shape: Sequence[int] = (1, 28, 28),
        hidden_sizes: Sequence[int] = (400,),
        activation: Activation = "relu",
        params_per_element: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.context_dim = check_int("context_dim", context_dim, low=1)
        self.output_shape = check_shape("output_shape", output_shape)
        self.params_per_element = check_int("params_per_element", params_per_element, low=1)
        n_out = params_per_element * math.prod(self.output_shape)
        self.body, self.head = _body_and_head(latent_dim + self.context_dim, hidden_sizes, n_out, activation)

    def forward(self, z: Tensor, context: Tensor) -> Tensor:
        out = self.head(self.body(torch.cat([z, context.to(z.dtype)], dim=-1)))
        return as_params(out, z.shape[:-1], self.params_per_element, self.output_shape)


class MLPClassifier(HyperparametersMixin, nn.Module):
    """``x -> logits (B, n_classes)``: a classifier ``q(y | x)`` over the flattened data.

    Args:
        input_shape: Shape of one example.
        n_classes: Number of classes.
        hidden_sizes: Widths of the hidden layers.
        activation: Nonlinearity between layers.

    Example::

        >>> import torch
        >>> MLPClassifier((1, 28, 28), n_classes=10)(torch.rand(4, 1, 28, 28)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        hidden_sizes: Sequence[int] = (400,),
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_shape = check_shape("input_shape", input_shape)
        self.n_classes = check_int("n_classes", n_classes, low=2)
        self.body, self.head = _body_and_head(math.prod(self.input_shape), hidden_sizes, n_classes, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x.flatten(1)))  # type: ignore[no-any-return]
