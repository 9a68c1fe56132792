"""Hierarchical VAEs with Gaussian latent layers: the stacked model of Burda et al. (2015).

Latent groups are named ``z1`` (bottom, next to the data) to ``zL`` (top) and listed top first. The generative
model is ``p(zL) p(z_{L-1} | zL) ... p(z1 | z2) p(x | z1)`` with ``p(zL) = N(0, I)`` and Gaussian conditionals;
:class:`StackedVAEModel` infers bottom-up, ``q(z1 | x) q(z2 | z1) ... q(zL | z_{L-1})``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.checks import check_int, check_shape
from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.posteriors import DiagonalGaussian
from lightning_vae.functional.math import at_least_float32
from lightning_vae.models.base import Generative, Inference, LatentVariableModel
from lightning_vae.models.layers import GaussianConditional, mlp
from lightning_vae.models.vae import LikelihoodName, make_likelihood
from lightning_vae.nets.common import Activation


def _check_layers(latent_sizes: Sequence[int], hidden_sizes: Sequence[Sequence[int]]) -> list[list[int]]:
    sizes = [check_int("latent_sizes[i]", s, low=1) for s in latent_sizes]
    if not sizes:
        raise ValueError("Expected `latent_sizes` to name at least one latent layer, got ()")
    if len(hidden_sizes) != len(sizes):
        raise ValueError(
            f"Expected one tuple of hidden sizes per latent layer ({len(sizes)}), got {len(hidden_sizes)}: "
            f"{list(hidden_sizes)}"
        )
    return [[check_int("hidden_sizes[i][j]", h, low=1) for h in layer] for layer in hidden_sizes]


class HierarchicalModel(HyperparametersMixin, LatentVariableModel):
    """What the stacked and ladder models share: the top-down generative path and ancestral sampling.

    Args:
        data_shape: Shape of one example.
        latent_sizes: Size of each latent layer, bottom (``z1``) to top (``zL``).
        hidden_sizes: Hidden widths of each layer's networks, bottom to top; the generative path mirrors them.
        likelihood: A likelihood name or a :class:`~lightning_vae.distributions.Likelihood`.
        activation: Nonlinearity of every hidden layer.
        params_per_element: Decoder outputs per data element (e.g. 256 for ``"categorical"``).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_sizes: Sequence[int],
        hidden_sizes: Sequence[Sequence[int]],
        likelihood: LikelihoodName | Likelihood,
        activation: Activation,
        params_per_element: int,
    ) -> None:
        super().__init__()
        self.data_shape = self.example_shape = check_shape("data_shape", data_shape)
        hidden = _check_layers(latent_sizes, hidden_sizes)
        self.latent_sizes = tuple(int(s) for s in latent_sizes)
        self.params_per_element = check_int("params_per_element", params_per_element, low=1)
        self.likelihood = make_likelihood(likelihood, self.data_shape)
        self.group_names = tuple(f"z{i}" for i in range(len(self.latent_sizes), 0, -1))
        # p(z_i | z_{i+1}) for i = 1 .. L-1, index i - 1; hidden widths mirror the inference network above z_i.
        sizes = self.latent_sizes
        self.top_down = nn.ModuleList(
            GaussianConditional(sizes[i + 1], sizes[i], list(reversed(hidden[i + 1])), activation)
            for i in range(len(sizes) - 1)
        )
        out = self.params_per_element * math.prod(self.example_shape)
        self.decoder = nn.Sequential(
            mlp([self.latent_sizes[0], *reversed(hidden[0])], activation),
            nn.Linear(hidden[0][0] if hidden[0] else self.latent_sizes[0], out),
        )

    def decode(self, z1: Tensor) -> Tensor:
        """The likelihood's parameters for bottom-layer samples ``(..., D1)``: ``(..., *param_shape)``."""
        out = self.decoder(z1)
        shape = self.example_shape
        if self.params_per_element > 1:
            shape = (self.params_per_element, *shape)
        return out.view(*z1.shape[:-1], *shape)

    def conditional_prior(self, i: int, above: Tensor) -> DiagonalGaussian:
        """``p(z_i | z_{i+1})`` for ``i`` in ``1 .. L-1`` given samples of the layer above."""
        return DiagonalGaussian(*self.top_down[i - 1](above))

    def top_prior(self, device: torch.device, dtype: torch.dtype | None = None) -> DiagonalGaussian:
        """``p(zL) = N(0, I)`` (float32 unless ``dtype`` is given)."""
        zeros = torch.zeros(self.latent_sizes[-1], device=device, dtype=dtype)
        return DiagonalGaussian(zeros, zeros)

    def generative(self, z: Mapping[str, Tensor], x: Tensor | None = None) -> Generative:
        """The likelihood's parameters from ``z1`` and every layer's prior, conditioned on the samples above."""
        top = len(self.latent_sizes)
        priors: dict[str, Distribution] = {f"z{top}": self.top_prior(z[f"z{top}"].device, z[f"z{top}"].dtype)}
        for i in range(top - 1, 0, -1):
            priors[f"z{i}"] = self.conditional_prior(i, z[f"z{i + 1}"])
        return Generative(self.decode(z["z1"]), priors)

    def prior_sample(self, n: int) -> dict[str, Tensor]:
        """Ancestral samples ``zL ~ p(zL)``, then each ``z_i ~ p(z_i | z_{i+1})``; ``(1, n, D_i)`` each."""
        param = next(self.parameters())
        top = len(self.latent_sizes)
        samples = {f"z{top}": self.top_prior(param.device, at_least_float32(param).dtype).sample((1, n))}
        for i in range(top - 1, 0, -1):
            samples[f"z{i}"] = self.conditional_prior(i, samples[f"z{i + 1}"]).sample()
        return samples


class StackedVAEModel(HierarchicalModel):
    """A stack of Gaussian latent layers inferred bottom-up (Burda et al. 2015, Section 5).

    Inference ``q(z1 | x) q(z2 | z1) ... q(zL | z_{L-1})``, each a diagonal Gaussian from an MLP; generation
    top-down as :class:`HierarchicalModel`. The defaults are the paper's two-layer MNIST model: deterministic
    layers 784-200-200 and 100-100 with tanh, latent layers of 100 and 50.

    Args:
        data_shape: Shape of one example.
        latent_sizes: Size of each latent layer, bottom to top.
        hidden_sizes: Hidden widths below each latent layer, bottom to top.
        likelihood: A likelihood name or a :class:`~lightning_vae.distributions.Likelihood`.
        activation: Nonlinearity of every hidden layer.
        params_per_element: Decoder outputs per data element.

    Example::

        >>> import torch
        >>> model = StackedVAEModel((1, 28, 28))
        >>> model.group_names
        ('z2', 'z1')
        >>> inference, generative = model(torch.rand(4, 1, 28, 28).round(), n_samples=3)
        >>> inference.z["z2"].shape, inference.z["z1"].shape, generative.params.shape
        (torch.Size([3, 4, 50]), torch.Size([3, 4, 100]), torch.Size([3, 4, 1, 28, 28]))
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_sizes: Sequence[int] = (100, 50),
        hidden_sizes: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
        likelihood: LikelihoodName | Likelihood = "bernoulli",
        activation: Activation = "tanh",
        params_per_element: int = 1,
    ) -> None:
        super().__init__(data_shape, latent_sizes, hidden_sizes, likelihood, activation, params_per_element)
        self.save_hyperparameters(ignore=["likelihood"] if isinstance(likelihood, nn.Module) else None)
        inputs = [math.prod(self.example_shape), *self.latent_sizes[:-1]]
        self.bottom_up = nn.ModuleList(
            GaussianConditional(n_in, size, list(hidden), activation)
            for n_in, size, hidden in zip(inputs, self.latent_sizes, hidden_sizes)
        )

    def inference(self, x: Tensor, n_samples: int = 1) -> Inference:
        """``q(z1 | x)`` and ``n_samples`` samples ``(k, B, D1)``, then each layer from the samples below it."""
        q = DiagonalGaussian(*self.bottom_up[0](x.flatten(1)))
        below = q.rsample((n_samples,))
        posteriors: dict[str, Distribution] = {"z1": q}
        samples = {"z1": below}
        for i in range(2, len(self.latent_sizes) + 1):
            q = DiagonalGaussian(*self.bottom_up[i - 1](below))  # batch shape (k, B)
            below = q.rsample()
            posteriors[f"z{i}"], samples[f"z{i}"] = q, below
        order = self.group_names
        return Inference({n: posteriors[n] for n in order}, {n: samples[n] for n in order})


__all__ = ["HierarchicalModel", "StackedVAEModel"]
