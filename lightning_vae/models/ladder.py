"""The Ladder VAE (Sønderby et al. 2016): top-down inference that merges bottom-up evidence with the prior."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.posteriors import LOG_VAR_RANGE, DiagonalGaussian
from lightning_vae.functional.math import at_least_float32, soft_clamp
from lightning_vae.models.base import Inference
from lightning_vae.models.hierarchical import HierarchicalModel
from lightning_vae.models.layers import mlp
from lightning_vae.models.vae import LikelihoodName
from lightning_vae.nets.common import Activation


def precision_weighted(loc_a: Tensor, log_var_a: Tensor, loc_b: Tensor, log_var_b: Tensor) -> tuple[Tensor, Tensor]:
    """The product of two diagonal Gaussians, normalised: ``(loc, log_var)`` with precisions adding up.

    ``1/σ² = 1/σa² + 1/σb²`` and ``μ = (μa/σa² + μb/σb²) σ²``, computed as ``log σ² = -logaddexp(-log σa²,
    -log σb²)`` and ``μ = w μa + (1 - w) μb`` with ``w = sigmoid(log σb² - log σa²)`` (no precision is formed, so
    nothing overflows for any finite log-variances).

    Example::

        >>> import torch
        >>> loc, log_var = precision_weighted(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]),
        ...                                   torch.tensor([0.0]))
        >>> loc.item(), round(log_var.exp().item(), 6)  # two unit Gaussians: the mean between, half the variance
        (1.0, 0.5)
    """
    log_var = -torch.logaddexp(-log_var_a, -log_var_b)
    weight = torch.sigmoid(log_var_b - log_var_a)
    return weight * loc_a + (1.0 - weight) * loc_b, log_var


class LadderVAEModel(HierarchicalModel):
    """A Ladder VAE: a deterministic bottom-up pass, then top-down inference sharing the generative network.

    The bottom-up pass computes ``d_i = MLP_i(d_{i-1})`` (``d_0 = x``) and Gaussian evidence ``(μ̂_i, σ̂_i)``
    for every layer. Inference runs top-down: ``q(zL | x) = N(μ̂_L, σ̂_L)``; for each lower layer the prior
    ``p(z_i | z_{i+1})`` of the *generative* network is merged with the evidence by precision weighting
    (:func:`precision_weighted`), so the two paths share the top-down network (Sønderby et al. 2016, eq. 17-19).
    Every latent group's posterior depends on the samples above it (batch shape ``(k, B)``).

    Args:
        data_shape: Shape of one example.
        latent_sizes: Size of each latent layer, bottom to top (the paper's MNIST model: 64, 32, 16, 8, 4).
        hidden_sizes: Hidden widths of each bottom-up block, bottom to top (the paper: 512, 256, 128, 64, 32
            units, two layers each); the generative path mirrors them.
        likelihood: A likelihood name or a :class:`~lightning_vae.distributions.Likelihood`.
        activation: Nonlinearity of every hidden layer.
        params_per_element: Decoder outputs per data element.

    Example::

        >>> import torch
        >>> model = LadderVAEModel((1, 28, 28), latent_sizes=(16, 8), hidden_sizes=((64,), (32,)))
        >>> inference, generative = model(torch.rand(4, 1, 28, 28).round(), n_samples=2)
        >>> model.group_names, inference.posteriors["z1"].batch_shape
        (('z2', 'z1'), torch.Size([2, 4]))
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_sizes: Sequence[int] = (64, 32),
        hidden_sizes: Sequence[Sequence[int]] = ((512, 512), (256, 256)),
        likelihood: LikelihoodName | Likelihood = "bernoulli",
        activation: Activation = "leaky_relu",
        params_per_element: int = 1,
    ) -> None:
        super().__init__(data_shape, latent_sizes, hidden_sizes, likelihood, activation, params_per_element)
        self.save_hyperparameters(ignore=["likelihood"] if isinstance(likelihood, nn.Module) else None)
        widths, blocks, heads = math.prod(self.example_shape), [], []
        for size, hidden in zip(self.latent_sizes, hidden_sizes):
            hidden = list(hidden) or [widths]
            blocks.append(mlp([widths, *hidden], activation))
            heads.append(nn.Linear(hidden[-1], 2 * size))
            widths = hidden[-1]
        self.bottom_up = nn.ModuleList(blocks)
        self.evidence = nn.ModuleList(heads)

    def _evidence(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(μ̂_i, log σ̂_i²)`` of every layer, bottom to top, log-variances clamped as the posterior does."""
        d, out = x.flatten(1), []
        for block, head in zip(self.bottom_up, self.evidence):
            d = block(d)
            loc, log_var = head(d).chunk(2, dim=-1)
            out.append((at_least_float32(loc), soft_clamp(at_least_float32(log_var), *LOG_VAR_RANGE)))
        return out

    def inference(self, x: Tensor, n_samples: int = 1) -> Inference:
        """Top-down: ``zL`` from its evidence, then each layer from its prior (given the sample above) and evidence."""
        evidence = self._evidence(x)
        top = len(self.latent_sizes)
        q = DiagonalGaussian.from_clamped(*evidence[-1])
        above = q.rsample((n_samples,))
        posteriors: dict[str, Distribution] = {f"z{top}": q}
        samples = {f"z{top}": above}
        for i in range(top - 1, 0, -1):
            prior_loc, prior_log_var = self.top_down[i - 1](above)
            prior_log_var = soft_clamp(at_least_float32(prior_log_var), *LOG_VAR_RANGE)
            loc, log_var = precision_weighted(*evidence[i - 1], at_least_float32(prior_loc), prior_log_var)
            q = DiagonalGaussian(loc, log_var)  # the merged log-variance may lie up to log 2 below the range
            above = q.rsample()
            posteriors[f"z{i}"], samples[f"z{i}"] = q, above
        return Inference(posteriors, samples)


__all__ = ["LadderVAEModel", "precision_weighted"]
