"""Priors p(z): standard normal, learnable diagonal Gaussian, mixture of Gaussians, VampPrior.

Every prior is an ``nn.Module`` whose ``forward(encoder)`` returns a ``torch.distributions``
distribution over ``z`` with event shape ``(D,)``. Gaussian priors return a
:class:`~lightning_vae.distributions.posteriors.DiagonalGaussian`, so the objective can use the
closed-form KL; the mixtures return a :class:`DiagonalGaussianMixture` and the objective falls back
to a Monte Carlo KL. Every distribution is built without argument validation, so building and
evaluating a prior costs no host sync.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from lightning_vae.checks import check_choice, check_float, check_int, check_shape
from lightning_vae.distributions.posteriors import (
    LOG_VAR_RANGE,
    DiagonalGaussian,
    as_posterior,
    diagonal_gaussian_params,
)
from lightning_vae.functional.math import at_least_float32, soft_clamp

_LOG_2PI = math.log(2 * math.pi)
#: What the VampPrior applies to its pseudo-inputs before the encoder.
PseudoInputActivation = Literal["none", "hardtanh"]
_EPS64 = torch.finfo(torch.float64).eps
#: The size (N x K x D float32 elements: 64 MiB) from which a mixture's log-density is evaluated by matrix products.
_EXPANDED_MIN_ELEMENTS = 2**24


class DiagonalGaussianMixture(MixtureSameFamily):
    """A mixture of K diagonal Gaussians over vectors, with a scale-safe log-density.

    ``log_prob`` computes each component's log-density by hand from standardised distances,
    ``log N_k(z) = -½ Σ_d (r² + log_var + log 2π)`` with ``r = (z - loc)·exp(-log_var / 2)``, and
    mixes them with ``logsumexp``. Unlike ``Normal.log_prob`` (whose backward divides by the variance
    squared) no intermediate of the forward or backward pass overflows, so a component with zero
    responsibility passes an exact zero gradient (never ``0·inf = NaN``) to ``z``, its mean, its
    log-variance and the mixture logits, wherever the float32 log-density of the mixture is finite.
    The log-variances must already lie in :data:`LOG_VAR_RANGE` (the priors soft-clamp them exactly
    as the posterior does): then ``exp(-log_var / 2) ≤ e^15``; ``r`` overflows only for
    ``|z - loc| ≥ 1e32``, and is bounded there by half the largest float (its square, and so that
    component's log-density, is ``-inf`` either way: its responsibility is 0). No argument
    validation is done (no host sync).

    Sampling, the mean and the variance are those of ``torch.distributions.MixtureSameFamily``.

    Args:
        logits: Mixture logits, shape ``(K,)``.
        locs: Component means, shape ``(K, D)``, float32.
        log_vars: Component log-variances, shape ``(K, D)``, float32, inside :data:`LOG_VAR_RANGE`.

    Example::

        >>> p = DiagonalGaussianMixture(torch.zeros(2), torch.tensor([[0.0], [1e8]]), torch.full((2, 1), -30.0))
        >>> z = torch.zeros(3, 1, requires_grad=True)
        >>> p.log_prob(z).sum().backward()  # the far component contributes an exact zero gradient
        >>> bool(torch.isfinite(z.grad).all())
        True
    """

    def __init__(self, logits: Tensor, locs: Tensor, log_vars: Tensor) -> None:
        if locs.dim() != 2 or locs.shape != log_vars.shape or logits.shape != locs.shape[:1]:
            raise ValueError(
                "Expected mixture logits of shape (K,) and component means and log-variances of shape (K, D), got "
                f"{tuple(logits.shape)}, {tuple(locs.shape)} and {tuple(log_vars.shape)}"
            )
        self.locs, self.log_vars = locs, log_vars
        self._inv_std = torch.exp(-0.5 * log_vars)
        self._log_norm = (log_vars + _LOG_2PI).sum(-1)  # (K,)
        self._log_weights = torch.log_softmax(logits, dim=-1)
        super().__init__(
            Categorical(logits=logits, validate_args=False),
            DiagonalGaussian.from_clamped(locs, log_vars),
            validate_args=False,
        )

    def component_log_prob(self, value: Tensor) -> Tensor:
        """``log N_k(value)`` of each component: shape ``(*value.shape[:-1], K)``.

        Without autograd, on the CPU or a CUDA device, for a large evaluation (where the ``(N, K, D)`` intermediate
        of the form above would take 64 MiB or more, e.g. the importance-weighted NLL with thousands of samples),
        the squared distances come from two float64 matrix products, ``Σ_d s²z² - 2 Σ_d s²μz + Σ_d s²μ²`` with
        ``s = exp(-log_var / 2)``: about six times faster for K = 500, D = 40 on the CPU. They are used only where
        a bound on their float64 rounding error (``4 D ε₆₄ max_k Σ_d s²(max|z| + |μ|)²``, one host read) is below
        1e-4 nats; otherwise, and whenever gradients are recorded, the scale-safe form above.
        """
        large = value.numel() * self.locs.shape[0] >= _EXPANDED_MIN_ELEMENTS
        if large and not torch.is_grad_enabled() and value.device.type in ("cpu", "cuda"):
            fast = self._expanded_log_prob(value)
            if fast is not None:
                return fast
        r = (value.unsqueeze(-2) - self.locs) * self._inv_std
        # Where r overflows (|z - loc| beyond ~1e32 at the log-variance floor) its square is inf either way; bounded,
        # the zero gradient of that component stays 0 (2·r·0) instead of inf·0 = NaN.
        bound = torch.finfo(r.dtype).max / 2
        return -0.5 * (r.clamp(-bound, bound).square().sum(-1) + self._log_norm)

    def _expanded_log_prob(self, value: Tensor) -> Tensor | None:
        """The squared distances by matrix products in float64, or ``None`` where their error bound exceeds 1e-4."""
        locs = self.locs.double()
        precision = self._inv_std.double().square()  # s² = exp(-log_var), (K, D)
        z = value.reshape(-1, value.shape[-1]).double()
        z_max = z.abs().max()
        bound = 4 * z.shape[-1] * _EPS64 * (precision * (z_max + locs.abs()).square()).sum(-1).max()
        if not bool(bound <= 1e-4):  # also False for NaN/inf values: the exact form then shows them as they are
            return None
        squared = z.square() @ precision.T - 2.0 * (z @ (locs * precision).T) + (locs.square() * precision).sum(-1)
        log_prob = -0.5 * (squared.clamp_min(0.0) + self._log_norm.double())
        dtype = torch.promote_types(value.dtype, self.locs.dtype)
        return log_prob.to(dtype).reshape(*value.shape[:-1], -1)

    def log_prob(self, value: Tensor) -> Tensor:  # noqa: D102
        return torch.logsumexp(self.component_log_prob(value) + self._log_weights, dim=-1)


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

    def __init__(self, latent_dim: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        zeros = torch.zeros(latent_dim, device=device, dtype=dtype)
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
        self.latent_dim = None if latent_dim is None else check_int("latent_dim", latent_dim, low=1)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        self._cached: tuple[tuple[int, torch.device, torch.dtype], StandardNormal] | None = None

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        anchor: torch.Tensor = self._anchor  # type: ignore[assignment]
        latent_dim = self._require_latent_dim()
        # The distribution holds no learned state: build it once per size, device and type, not at every step
        # (float64 for a float64 model; narrower types give float32, as the posterior does).
        dtype = at_least_float32(anchor).dtype
        key = (latent_dim, anchor.device, dtype)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, StandardNormal(latent_dim, device=anchor.device, dtype=dtype))
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
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_var = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        return DiagonalGaussian(self.loc, self.log_var)


class MixtureOfGaussiansPrior(Prior):
    """A learned mixture of ``n_components`` diagonal Gaussians (KL by Monte Carlo).

    The component log-variances are soft-clamped to
    :data:`~lightning_vae.distributions.posteriors.LOG_VAR_RANGE`, as the posterior's are, and the
    log-density is the scale-safe one of :class:`DiagonalGaussianMixture`.

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
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        check_int("n_components", n_components, low=1)
        self.logits = nn.Parameter(torch.zeros(n_components))
        # Spread the initial means so the components do not start identical.
        self.locs = nn.Parameter(torch.randn(n_components, latent_dim, generator=torch.Generator().manual_seed(0)))
        self.log_vars = nn.Parameter(torch.zeros(n_components, latent_dim))

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        log_vars = soft_clamp(at_least_float32(self.log_vars), *LOG_VAR_RANGE)
        return DiagonalGaussianMixture(at_least_float32(self.logits), at_least_float32(self.locs), log_vars)


class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): ``p(z) = 1/K sum_k q(z | u_k)`` with learned pseudo-inputs ``u_k``.

    With a diagonal-Gaussian encoder, whether it returns ``(loc, log_var)``, a
    :class:`~lightning_vae.distributions.DiagonalGaussian` or ``Independent(Normal(loc, scale), 1)``,
    the prior is a :class:`DiagonalGaussianMixture` of the pseudo-posteriors, so no NaN gradient
    reaches the encoder from a far or sharp pseudo-posterior. Their log-variances are soft-clamped to
    :data:`~lightning_vae.distributions.posteriors.LOG_VAR_RANGE` as the posterior's are (for
    ``2 log scale`` of a ``Normal``: the identity to float32 precision for scales in [e^-7.5, e^2.5]).
    An encoder returning another distribution is mixed with
    ``torch.distributions.MixtureSameFamily``.

    The pseudo-inputs are free parameters by default. ``pseudo_input_activation="hardtanh"`` passes them through
    ``hardtanh(0, 1)`` before the encoder, as the paper's code does (``jmtomczak/vae_vampprior``, ``Model.py``:
    the encoder sees ``clip(u, 0, 1)``, and a pseudo-input element outside ``[0, 1]`` gets no gradient). That code
    initialises ``u`` at ``N(0.05, 0.01)`` (``init_mean=0.05, init_std=0.01``).

    Args:
        input_shape: Shape of one data example, e.g. ``(1, 28, 28)``.
        n_components: Number K of pseudo-inputs.
        latent_dim: Size of z (only used for bookkeeping; the encoder decides it).
        pseudo_input_activation: ``"none"`` (the encoder sees ``u``) or ``"hardtanh"`` (it sees ``clip(u, 0, 1)``).
        init_mean: Mean of the pseudo-inputs' normal initialisation.
        init_std: Standard deviation of the pseudo-inputs' normal initialisation.

    Raises:
        ValueError: If ``pseudo_input_activation`` is not one of the names above, or ``init_std`` is negative.

    Example::

        >>> from lightning_vae.nets import MLPEncoder
        >>> enc = MLPEncoder(input_shape=(1, 4, 4), latent_dim=2, hidden_sizes=(8,))
        >>> VampPrior((1, 4, 4), n_components=5)(enc).log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
        >>> paper = VampPrior((1, 4, 4), 5, pseudo_input_activation="hardtanh", init_mean=0.05, init_std=0.01)
        >>> bool(paper.encoder_inputs().min() >= 0)
        True
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_components: int = 500,
        latent_dim: int | None = None,
        pseudo_input_activation: PseudoInputActivation = "none",
        init_mean: float = 0.5,
        init_std: float = 0.05,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_int("n_components", n_components, low=1)
        input_shape = check_shape("input_shape", input_shape)
        self.latent_dim = None if latent_dim is None else check_int("latent_dim", latent_dim, low=1)
        self.pseudo_input_activation = check_choice(
            "pseudo_input_activation", pseudo_input_activation, PseudoInputActivation
        )
        init_mean = check_float("init_mean", init_mean)
        init_std = check_float("init_std", init_std, low=0.0)
        generator = torch.Generator().manual_seed(0)
        # Default: near the middle of [0, 1] data with a little spread.
        self.pseudo_inputs = nn.Parameter(
            init_mean + init_std * torch.randn(n_components, *input_shape, generator=generator)
        )

    def encoder_inputs(self) -> Tensor:
        """The pseudo-inputs as the encoder sees them (through ``hardtanh(0, 1)`` where that option is set)."""
        if self.pseudo_input_activation == "hardtanh":
            return nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        return self.pseudo_inputs

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        if encoder is None:
            raise ValueError("VampPrior needs the encoder: call it as `prior(encoder)`")
        q = as_posterior(encoder(self.encoder_inputs()))
        logits = torch.zeros(self.pseudo_inputs.shape[0], device=self.pseudo_inputs.device)
        params = diagonal_gaussian_params(q)
        if params is not None:
            loc, log_var = params
            if not isinstance(q, DiagonalGaussian):  # 2 log scale of a Normal, not clamped yet
                log_var = soft_clamp(log_var, *LOG_VAR_RANGE)
            return DiagonalGaussianMixture(logits.to(loc.dtype), loc, log_var)
        return MixtureSameFamily(Categorical(logits=logits, validate_args=False), q, validate_args=False)


def is_standard_normal(p: Distribution) -> bool:
    """Whether ``p`` is the standard normal built by :class:`StandardNormalPrior`."""
    return isinstance(p, StandardNormal)
