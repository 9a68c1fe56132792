"""The diagonal-Gaussian posterior q(z|x) built from an encoder's ``(loc, log_var)``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from lightning_vae.functional.math import at_least_float32, soft_clamp

#: Log-variances are soft-clamped to this range: exp(-30) ~ 1e-13, exp(20) ~ 5e8, both finite in float32.
LOG_VAR_RANGE: tuple[float, float] = (-30.0, 20.0)

_LOG_2PI = math.log(2 * math.pi)

#: Where the soft clamp to :data:`LOG_VAR_RANGE` is the identity to float32 precision: it moves a value by at most
#: ``exp(-15)`` = 3.1e-7 (less than the 2.2e-6 rounding error of evaluating it in float32) and its derivative is
#: within 3.1e-7 of 1.
IDENTITY_RANGE: tuple[float, float] = (-15.0, 5.0)


def clamp_log_var(log_var: Tensor) -> Tensor:
    """Soft-clamp float32 log-variances to :data:`LOG_VAR_RANGE`, as :class:`DiagonalGaussian` does.

    On the CPU, where reading two numbers from a tensor costs no device synchronisation, a batch whose values all
    lie in :data:`IDENTITY_RANGE` is returned as it is: there the clamp is the identity to float32 precision (the
    returned value is nearer the exact clamp than float32's own evaluation of it; the derivative is within 3.1e-7 of
    the exact one), and one min/max reduction with two reads costs ~3 µs against ~50 µs for the clamp's forward and
    backward operations. Anywhere else (other devices, values outside the range, NaN) the clamp is applied.

    Example::

        >>> import torch
        >>> clamp_log_var(torch.tensor([-1e4, 0.0, 1e4]))
        tensor([-30.,   0.,  20.])
        >>> x = torch.tensor([-3.0, 0.5])
        >>> clamp_log_var(x) is x
        True
    """
    if log_var.device.type == "cpu" and log_var.dtype == torch.float32 and log_var.numel() > 0:
        low, high = torch.aminmax(log_var.detach())
        if IDENTITY_RANGE[0] <= low.item() and high.item() <= IDENTITY_RANGE[1]:
            return log_var
    return soft_clamp(log_var, *LOG_VAR_RANGE)


class NoiseCachedGaussian:
    """What the Gaussian posteriors share: ``log q`` of their own last sample from its standard-normal noise.

    ``rsample`` keeps ``(z, eps)`` in ``_last_sample``; ``log_prob(z)`` of that very tensor is then
    ``-0.5 (|eps|² + Σ log_var + D log 2π)``, exact wherever the sample is (no division by a tiny variance), and any
    other value goes through :meth:`_squared_distance` (the squared standardised distance summed over dimensions).
    """

    log_var: Tensor
    _last_sample: tuple[Tensor, Tensor] | None
    rsample: Callable[..., Tensor]  # defined by each subclass, keeping `_last_sample`
    _squared_distance: Callable[[Tensor], Tensor]

    def sample(self, sample_shape: Any = ()) -> Tensor:  # noqa: D102
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:  # noqa: D102
        last = self._last_sample
        squared = last[1].square().sum(-1) if last is not None and value is last[0] else self._squared_distance(value)
        return -0.5 * (squared + (self.log_var + _LOG_2PI).sum(-1))

    def entropy(self) -> Tensor:  # noqa: D102
        return 0.5 * (self.log_var + (1.0 + _LOG_2PI)).sum(-1)


class DiagonalGaussian(NoiseCachedGaussian, Independent):
    """``N(loc, diag(exp(log_var)))`` over vectors, keeping ``log_var`` for closed-form KLs.

    The log-variance is soft-clamped to :data:`LOG_VAR_RANGE` and both parameters are computed in
    float32, so half-precision or extreme encoder outputs still give a finite distribution. Argument
    validation (``validate_args``) is off by default: it would cost a host sync per training step, and
    the soft clamp already guarantees a positive scale.

    ``log_prob`` of the tensor most recently returned by :meth:`rsample` or :meth:`sample` is
    computed from the standard-normal noise ``ε`` kept with it: ``-½ Σ (ε² + log_var + log 2π)``.
    Near the floor of :data:`LOG_VAR_RANGE` (σ ≈ 3e-7) a float32 ``z = loc + σ·ε`` cannot resolve σ
    next to a large ``loc`` (its spacing there is ``|loc|·1.2e-7``), so ``(z - loc) / σ`` recomputed
    from the rounded ``z`` is off by up to ``ulp(loc) / 2σ`` standard deviations: about half a nat
    per dimension for ``|loc| ≥ 100``. No fixed floor avoids that for every ``|loc|`` (σ would have to
    grow with ``|loc|``, changing the closed-form KL too), so the noise is kept instead. The value is
    the density of the real-valued sample the Monte Carlo KL and IWAE estimates are about, and its
    gradient is the same as the recomputed one (``log q(loc + σ·ε)`` is exactly this function of
    ``loc`` and ``log_var``). Any other value (a copy, a slice, a detached tensor, another sample) uses
    the standardised form ``-½ Σ (((z - loc)·exp(-log_var/2))² + log_var + log 2π)``.

    Args:
        loc: Means, shape ``(..., D)``.
        log_var: Log-variances, same shape as ``loc``.

    Example::

        >>> import torch
        >>> q = DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
        >>> q.rsample().shape, q.event_shape
        (torch.Size([2, 3]), torch.Size([3]))
        >>> z = q.rsample((4,))
        >>> torch.allclose(q.log_prob(z), q.log_prob(z.clone()))  # from ε, and recomputed
        True
    """

    def __init__(self, loc: Tensor, log_var: Tensor, validate_args: bool | None = False) -> None:
        if loc.shape != log_var.shape:
            raise ValueError(
                f"Expected the encoder's `loc` and `log_var` to have the same shape, got {tuple(loc.shape)} "
                f"and {tuple(log_var.shape)}"
            )
        if loc.dim() < 1:
            raise ValueError(f"Expected posterior parameters of shape (B, D), got a scalar of shape {tuple(loc.shape)}")
        self._setup(at_least_float32(loc), soft_clamp(at_least_float32(log_var), *LOG_VAR_RANGE), validate_args)

    def _setup(self, loc: Tensor, log_var: Tensor, validate_args: bool | None) -> None:
        """Initialise from float32 (or float64) parameters whose log-variance is already clamped."""
        self.log_var = log_var
        self._last_sample: tuple[Tensor, Tensor] | None = None
        super().__init__(_normal(loc, torch.exp(0.5 * log_var)), 1, validate_args)

    @classmethod
    def from_clamped(cls, loc: Tensor, log_var: Tensor) -> DiagonalGaussian:
        """A :class:`DiagonalGaussian` from float32 (or float64) ``loc`` and a ``log_var`` inside :data:`LOG_VAR_RANGE`.

        The soft clamp is not applied again (it is not idempotent: it would move values near the bounds).
        """
        new = DiagonalGaussian.__new__(DiagonalGaussian)
        new._setup(loc, log_var, False)
        return new

    @property
    def loc(self) -> Tensor:
        """The mean of each latent dimension."""
        return self.base_dist.loc

    def rsample(self, sample_shape: Any = ()) -> Tensor:  # noqa: D102
        # What Normal.rsample computes, without its shape bookkeeping (this runs at every training step).
        loc, scale = self.base_dist.loc, self.base_dist.scale
        eps = torch.randn(torch.Size(sample_shape) + loc.shape, dtype=loc.dtype, device=loc.device)
        z = loc + eps * scale
        self._last_sample = (z, eps)
        return z

    def _squared_distance(self, value: Tensor) -> Tensor:
        return ((value - self.loc) * torch.exp(-0.5 * self.log_var)).square().sum(-1)

    def expand(self, batch_shape: Any, _instance: Any = None) -> DiagonalGaussian:  # noqa: D102
        shape = torch.Size(batch_shape) + self.event_shape
        return DiagonalGaussian.from_clamped(self.loc.expand(shape), self.log_var.expand(shape))


def _normal(loc: Tensor, scale: Tensor) -> Normal:
    """``Normal(loc, scale)`` for parameters of one shape, without argument validation or broadcasting."""
    normal = Normal.__new__(Normal)
    normal.loc, normal.scale = loc, scale
    Distribution.__init__(normal, loc.shape, validate_args=False)
    return normal


def diagonal_gaussian_params(d: Distribution) -> tuple[Tensor, Tensor] | None:
    """``(loc, log_var)`` of a diagonal Gaussian over vectors, or ``None`` for any other distribution.

    A :class:`DiagonalGaussian` gives its own (clamped) parameters; ``Independent(Normal(loc, scale), 1)`` gives
    ``loc`` and ``2 log scale`` in float32 (float64 stays float64), unclamped.

    Example::

        >>> import torch
        >>> from torch.distributions import Independent, Normal
        >>> diagonal_gaussian_params(Independent(Normal(torch.zeros(2), torch.full((2,), 2.0)), 1))[1]
        tensor([1.3863, 1.3863])
    """
    if isinstance(d, DiagonalGaussian):
        return d.loc, d.log_var
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1:
        return at_least_float32(d.base_dist.loc), 2.0 * torch.log(at_least_float32(d.base_dist.scale))
    return None


def as_posterior(params: Any) -> Distribution:
    """Turn an encoder output into a distribution over ``z`` with event shape ``(D,)``.

    Accepts a ``(loc, log_var)`` pair or a ``torch.distributions.Distribution`` (returned as is).

    Raises:
        TypeError: If the encoder returned anything else.
        ValueError: If the parameters have the wrong shape or the distribution has no event dimension.
    """
    if isinstance(params, Distribution):
        if len(params.event_shape) != 1:
            raise ValueError(
                "Expected the encoder's distribution to have event shape (D,), got "
                f"{tuple(params.event_shape)}; wrap a Normal in torch.distributions.Independent(..., 1)"
            )
        return params
    if isinstance(params, (tuple, list)) and len(params) == 2 and all(isinstance(p, Tensor) for p in params):
        return DiagonalGaussian(params[0], params[1])
    raise TypeError(
        "Expected the encoder to return a tuple `(loc, log_var)` of tensors or a torch Distribution, got "
        f"{type(params).__name__}"
    )
