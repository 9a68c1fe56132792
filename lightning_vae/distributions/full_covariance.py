"""The full-covariance Gaussian posterior ``N(loc, L Lᵀ)`` and its closed-form KL to a diagonal Gaussian prior.

The lower-triangular scale ``L`` (``scale_tril``) is built from an encoder's outputs: a log-variance per
dimension, whose half gives the log of ``L``'s diagonal (soft-clamped to
:data:`~lightning_vae.distributions.posteriors.LOG_VAR_RANGE` as the diagonal posterior's is, so the diagonal is
positive and finite), and the ``D(D-1)/2`` strictly-lower entries, row by row. With the strictly-lower entries at
zero it is the diagonal Gaussian of the same ``(loc, log_var)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints, register_kl

from lightning_vae.distributions.posteriors import LOG_VAR_RANGE, DiagonalGaussian, NoiseCachedGaussian
from lightning_vae.functional.math import float32_region, soft_clamp


def n_lower(dim: int) -> int:
    """The number of strictly-lower entries of a ``dim × dim`` matrix, ``dim (dim - 1) / 2``.

    Example::

        >>> n_lower(4)
        6
    """
    return dim * (dim - 1) // 2


class FullCovarianceGaussian(NoiseCachedGaussian, Distribution):
    """``N(loc, L Lᵀ)`` over vectors with ``L = diag(exp(log_var / 2)) + strictly_lower(lower)``.

    ``exp(log_var)`` is the variance of each dimension given the dimensions before it (the squared diagonal of
    the Cholesky factor), soft-clamped to :data:`LOG_VAR_RANGE`. Half-precision inputs are computed in float32,
    float64 stays float64. Argument validation is off (no host sync); the clamp keeps the diagonal positive.

    As for :class:`~lightning_vae.distributions.DiagonalGaussian`, ``log_prob`` of the tensor :meth:`rsample`
    returned last is computed from the standard-normal noise ``ε`` kept with it,
    ``-½ Σ (ε² + log_var + log 2π)``; any other value solves ``L r = z - loc`` for the standardised distance.

    Args:
        loc: Means, ``(..., D)``.
        log_var: Log of the squared diagonal of ``L``, ``(..., D)``.
        lower: Strictly-lower entries of ``L`` in row-major order (``(1, 0), (2, 0), (2, 1), ...``),
            ``(..., D (D - 1) / 2)``.

    Example::

        >>> import torch
        >>> q = FullCovarianceGaussian(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))
        >>> q.batch_shape, q.event_shape, q.rsample((4,)).shape
        (torch.Size([2]), torch.Size([3]), torch.Size([4, 2, 3]))
        >>> q.scale_tril[0]
        tensor([[1., 0., 0.],
                [1., 1., 0.],
                [1., 1., 1.]])
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, log_var: Tensor, lower: Tensor, validate_args: bool | None = False) -> None:
        for name, value in (("loc", loc), ("log_var", log_var), ("lower", lower)):
            if not isinstance(value, Tensor):
                raise TypeError(f"Expected `{name}` to be a tensor, got {type(value).__name__}")
        if loc.dim() < 1 or loc.shape != log_var.shape:
            raise ValueError(
                f"Expected `loc` and `log_var` of one shape (..., D), got {tuple(loc.shape)} and {tuple(log_var.shape)}"
            )
        dim = loc.shape[-1]
        if lower.shape != (*loc.shape[:-1], n_lower(dim)):
            raise ValueError(
                f"Expected `lower` of shape {(*loc.shape[:-1], n_lower(dim))} (the D(D-1)/2 strictly-lower entries "
                f"of the scale for D={dim}), got {tuple(lower.shape)}"
            )
        dtype = torch.promote_types(loc.dtype, torch.float32)
        self.loc = loc.to(dtype)
        self.log_var = soft_clamp(log_var.to(dtype), *LOG_VAR_RANGE)
        rows, cols = torch.tril_indices(dim, dim, offset=-1, device=loc.device)
        tril = torch.zeros(*loc.shape, dim, dtype=dtype, device=loc.device)
        tril[..., rows, cols] = lower.to(dtype)
        self.scale_tril: Tensor = tril + torch.diag_embed(torch.exp(0.5 * self.log_var))
        self._last_sample: tuple[Tensor, Tensor] | None = None
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    @classmethod
    def from_scale_tril(cls, loc: Tensor, scale_tril: Tensor) -> FullCovarianceGaussian:
        """The distribution of a lower-triangular scale with a positive diagonal (entries above it are ignored).

        Example::

            >>> import torch
            >>> q = FullCovarianceGaussian.from_scale_tril(torch.zeros(2), torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
            >>> q.covariance_matrix.round(decimals=4)
            tensor([[4., 2.],
                    [2., 2.]])
        """
        dim = scale_tril.shape[-1]
        rows, cols = torch.tril_indices(dim, dim, offset=-1, device=scale_tril.device)
        log_var = 2.0 * torch.log(torch.diagonal(scale_tril, dim1=-2, dim2=-1))
        return cls(loc, log_var, scale_tril[..., rows, cols])

    @property
    def mean(self) -> Tensor:  # noqa: D102
        return self.loc

    @property
    def variance(self) -> Tensor:
        """The marginal variance of each dimension, the diagonal of ``L Lᵀ``."""
        return self.scale_tril.square().sum(-1)

    @property
    def covariance_matrix(self) -> Tensor:
        """``L Lᵀ``, ``(..., D, D)``."""
        with float32_region(self.scale_tril.device):
            return self.scale_tril @ self.scale_tril.transpose(-1, -2)

    def rsample(self, sample_shape: Any = ()) -> Tensor:  # noqa: D102
        shape = torch.Size(sample_shape) + self.loc.shape
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        # In the distribution's type under autocast too: a bfloat16 product moved z by 0.04 and log q by 0.2 nats.
        with float32_region(self.loc.device):
            z = self.loc + (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        self._last_sample = (z, eps)
        return z

    def _squared_distance(self, value: Tensor) -> Tensor:
        diff = (value - self.loc).unsqueeze(-1)
        tril = self.scale_tril.expand(*diff.shape[:-2], *self.scale_tril.shape[-2:])
        return torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1).square().sum(-1)

    def expand(self, batch_shape: Any, _instance: Any = None) -> FullCovarianceGaussian:  # noqa: D102
        shape = torch.Size(batch_shape)
        new = FullCovarianceGaussian.__new__(FullCovarianceGaussian)
        new.loc = self.loc.expand(*shape, *self.event_shape)
        new.log_var = self.log_var.expand(*shape, *self.event_shape)
        new.scale_tril = self.scale_tril.expand(*shape, *self.scale_tril.shape[-2:])
        new._last_sample = None
        Distribution.__init__(new, shape, self.event_shape, validate_args=False)
        return new


def full_covariance_kl(
    q: FullCovarianceGaussian, loc_p: Tensor | None = None, log_var_p: Tensor | None = None
) -> Tensor:
    """``KL(N(loc, L Lᵀ) || N(loc_p, diag(exp(log_var_p))))`` of each example, ``q.batch_shape``, in nats.

    ``½ [tr(V⁻¹ Σ) + (μ - m)ᵀ V⁻¹ (μ - m) - D + log det V - log det Σ]``, computed as the diagonal Gaussians'
    stable form (:func:`~lightning_vae.functional.gaussian_kl`) plus ``½ Σ_i Σ_{j<i} L_ij² / v_i``: exact, and
    the same as the diagonal KL when the strictly-lower entries are zero. The prior defaults to ``N(0, I)``.
    The KL does not factorise over dimensions: there is no elementwise form.

    Example::

        >>> import torch
        >>> q = FullCovarianceGaussian(torch.zeros(1, 2), torch.zeros(1, 2), torch.full((1, 1), 2.0))
        >>> full_covariance_kl(q)  # ½ · 2²
        tensor([2.])
    """
    diag = q.log_var
    off = (q.scale_tril - torch.diag_embed(torch.diagonal(q.scale_tril, dim1=-2, dim2=-1))).square().sum(-1)
    if loc_p is None and log_var_p is None:
        elementwise = 0.5 * (torch.expm1(diag) - diag + off) + 0.5 * q.loc.square()
        return elementwise.sum(-1)
    loc_p = torch.zeros_like(q.loc) if loc_p is None else loc_p.to(q.loc.dtype)
    log_var_p = torch.zeros_like(diag) if log_var_p is None else log_var_p.to(diag.dtype)
    delta = diag - log_var_p
    inv_var_p = torch.exp(-log_var_p)
    mean_term = ((q.loc - loc_p) * torch.exp(-0.5 * log_var_p)).square()
    return (0.5 * (torch.expm1(delta) - delta + off * inv_var_p + mean_term)).sum(-1)


@register_kl(FullCovarianceGaussian, DiagonalGaussian)
def _kl_full_diagonal(q: FullCovarianceGaussian, p: DiagonalGaussian) -> Tensor:
    return full_covariance_kl(q, p.loc, p.log_var)


__all__ = ["FullCovarianceGaussian", "full_covariance_kl", "n_lower"]
