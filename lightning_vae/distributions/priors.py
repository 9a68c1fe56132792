"""Priors p(z): standard normal, learnable diagonal Gaussian, mixture of Gaussians, VampPrior.

Every prior is an ``nn.Module`` whose ``forward(encoder)`` returns a ``torch.distributions``
distribution over ``z`` with event shape ``(D,)``. Gaussian priors return a
:class:`~lightning_vae.distributions.posteriors.DiagonalGaussian`, so the objective can use the
closed-form KL; the mixtures fall back to a Monte Carlo KL.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from lightning_vae.distributions.posteriors import DiagonalGaussian, as_posterior


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
    return value


class Prior(HyperparametersMixin, nn.Module):
    """Base class of priors. Subclasses implement :meth:`forward`.

    Attributes:
        latent_dim: Size D of z, or ``None`` until known (the standard normal learns it lazily).
    """

    latent_dim: int | None = None

    def forward(self, encoder: nn.Module | None = None) -> Distribution:  # pragma: no cover - abstract
        """Return the prior as a distribution over z with event shape ``(D,)``."""
        raise NotImplementedError

    def _require_latent_dim(self) -> int:
        if self.latent_dim is None:
            raise ValueError(
                f"{type(self).__name__} does not know the latent size yet: pass `latent_dim` to the prior or the "
                "VAE, or encode a batch first"
            )
        return self.latent_dim


class StandardNormal(DiagonalGaussian):
    """``N(0, I)``; marked so the objective uses the cheapest closed-form KL."""

    def __init__(self, latent_dim: int, device: torch.device | None = None) -> None:
        zeros = torch.zeros(latent_dim, device=device)
        super().__init__(zeros, zeros)


class StandardNormalPrior(Prior):
    """``p(z) = N(0, I)``.

    Args:
        latent_dim: Size of z; may be left out and is then taken from the first posterior seen.

    Example::

        >>> StandardNormalPrior(4)().sample((2,)).shape
        torch.Size([2, 4])
    """

    def __init__(self, latent_dim: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = None if latent_dim is None else _check_positive_int("latent_dim", latent_dim)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        self._cached: tuple[tuple[int, torch.device], StandardNormal] | None = None

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        anchor: torch.Tensor = self._anchor  # type: ignore[assignment]
        latent_dim = self._require_latent_dim()
        # The distribution holds no learned state: build it once per size and device, not at every step.
        key = (latent_dim, anchor.device)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, StandardNormal(latent_dim, device=anchor.device))
        return self._cached[1]


class LearnableGaussianPrior(Prior):
    """``p(z) = N(mu, diag(exp(log_var)))`` with ``mu`` and ``log_var`` learned.

    Args:
        latent_dim: Size of z.

    Example::

        >>> LearnableGaussianPrior(3)().event_shape
        torch.Size([3])
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = _check_positive_int("latent_dim", latent_dim)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_var = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        return DiagonalGaussian(self.loc, self.log_var)


class MixtureOfGaussiansPrior(Prior):
    """A learned mixture of ``n_components`` diagonal Gaussians (KL by Monte Carlo).

    Args:
        latent_dim: Size of z.
        n_components: Number of mixture components.

    Example::

        >>> p = MixtureOfGaussiansPrior(2, n_components=3)()
        >>> p.log_prob(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, latent_dim: int, n_components: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = _check_positive_int("latent_dim", latent_dim)
        _check_positive_int("n_components", n_components)
        self.logits = nn.Parameter(torch.zeros(n_components))
        # Spread the initial means so the components do not start identical.
        self.locs = nn.Parameter(torch.randn(n_components, latent_dim, generator=torch.Generator().manual_seed(0)))
        self.log_vars = nn.Parameter(torch.zeros(n_components, latent_dim))

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        components = Independent(Normal(self.locs, torch.exp(0.5 * self.log_vars)), 1)
        return MixtureSameFamily(Categorical(logits=self.logits), components)


class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): ``p(z) = 1/K sum_k q(z | u_k)`` with learned pseudo-inputs ``u_k``.

    Args:
        input_shape: Shape of one data example, e.g. ``(1, 28, 28)``.
        n_components: Number K of pseudo-inputs.
        latent_dim: Size of z (only used for bookkeeping; the encoder decides it).

    Example::

        >>> from lightning_vae.nets import MLPEncoder
        >>> enc = MLPEncoder(input_shape=(1, 4, 4), latent_dim=2, hidden_sizes=(8,))
        >>> VampPrior((1, 4, 4), n_components=5)(enc).log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(self, input_shape: Sequence[int], n_components: int = 500, latent_dim: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_positive_int("n_components", n_components)
        self.latent_dim = latent_dim
        generator = torch.Generator().manual_seed(0)
        # Start near the middle of [0, 1] data with a little spread (as in the paper's initialisation).
        self.pseudo_inputs = nn.Parameter(0.5 + 0.05 * torch.randn(n_components, *input_shape, generator=generator))

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        if encoder is None:
            raise ValueError("VampPrior needs the encoder: call it as `prior(encoder)`")
        q = as_posterior(encoder(self.pseudo_inputs))
        if isinstance(q, DiagonalGaussian):
            components: Distribution = Independent(Normal(q.loc, q.base_dist.scale), 1)
        else:
            components = q
        logits = torch.zeros(self.pseudo_inputs.shape[0], device=self.pseudo_inputs.device)
        return MixtureSameFamily(Categorical(logits=logits), components)


PRIORS = {
    "standard_normal": StandardNormalPrior,
    "learnable": LearnableGaussianPrior,
    "mixture": MixtureOfGaussiansPrior,
    "vamp": VampPrior,
}


def is_standard_normal(p: Distribution) -> bool:
    """Whether ``p`` is the standard normal built by :class:`StandardNormalPrior`."""
    return isinstance(p, StandardNormal)
