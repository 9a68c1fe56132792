"""Building blocks of hierarchical models: MLPs and Gaussian conditionals on inputs with any leading dimensions."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lightning_vae.checks import check_int
from lightning_vae.nets.common import Activation, make_activation


def mlp(sizes: Sequence[int], activation: Activation) -> nn.Sequential:
    """Linear layers of ``sizes[i] -> sizes[i + 1]``, each followed by ``activation``.

    Example::

        >>> mlp([4, 8, 8], "tanh")
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): Tanh()
          (2): Linear(in_features=8, out_features=8, bias=True)
          (3): Tanh()
        )
    """
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), make_activation(activation)]
    return nn.Sequential(*layers)


class GaussianConditional(nn.Module):
    """``h -> (loc, log_var)`` of a diagonal Gaussian of ``out_features``, through hidden layers.

    Works on inputs of shape ``(..., in_features)`` (samples of a latent group carry a sample dimension).

    Args:
        in_features: Size of the input.
        out_features: Size of the Gaussian.
        hidden_sizes: Widths of the hidden layers (may be empty: one linear map).
        activation: Nonlinearity after each hidden layer.

    Example::

        >>> import torch
        >>> loc, log_var = GaussianConditional(3, 2, (8,), "tanh")(torch.zeros(5, 4, 3))
        >>> loc.shape, log_var.shape
        (torch.Size([5, 4, 2]), torch.Size([5, 4, 2]))
    """

    def __init__(
        self, in_features: int, out_features: int, hidden_sizes: Sequence[int] = (), activation: Activation = "tanh"
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, low=1)
        self.out_features = check_int("out_features", out_features, low=1)
        hidden = [check_int("hidden_sizes[i]", h, low=1) for h in hidden_sizes]
        self.body = mlp([in_features, *hidden], activation)
        self.head = nn.Linear(hidden[-1] if hidden else in_features, 2 * out_features)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_var = self.head(self.body(h)).chunk(2, dim=-1)
        return loc, log_var


__all__ = ["GaussianConditional", "mlp"]
