"""The latent regularisers of the disentangling objectives, as pure functions of the codes.

- FactorVAE (Kim & Mnih 2018): :func:`permute_dims` (samples of ``prod_j q(z_j)`` from a batch of ``q(z)``),
  :func:`density_ratio_tc` (the discriminator's estimate of the total correlation) and
  :func:`discriminator_loss`, as ``ops.py`` / ``solver.py`` of 1Konny/FactorVAE and ``vae.py`` of
  disentanglement_lib write them;
- DIP-VAE I and II (Kumar et al. 2018): :func:`dip_covariance` and :func:`dip_regularizer`, as disentanglement_lib's
  ``compute_covariance_z_mean`` and ``regularize_diag_off_diag_dip``;
- InfoVAE / WAE-MMD (Zhao et al. 2019; Tolstikhin et al. 2018): :func:`mmd`, the unbiased estimator of the squared
  maximum mean discrepancy with an RBF or inverse-multiquadric kernel, as ``mmd_penalty`` of tolstikhin/wae.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_vae.checks import check_choice, check_float

#: The kernels of :func:`mmd`: ``exp(-d^2 / C)`` and ``C / (C + d^2)`` for squared distance ``d^2``.
Kernel = Literal["rbf", "imq"]
#: DIP-VAE's two covariances: of the posterior means (I) or of the aggregate posterior (II).
DipType = Literal["i", "ii"]

#: The bandwidth multipliers of WAE's inverse-multiquadric penalty (``mmd_penalty`` of tolstikhin/wae).
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _check_codes(name: str, z: Tensor) -> None:
    if z.dim() != 2:
        raise ValueError(f"Expected `{name}` of shape (B, D), got {tuple(z.shape)}")


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Shuffle each latent dimension across the batch independently: samples of ``prod_j q(z_j)``.

    One ``torch.randperm(B)`` per dimension, in order, as ``permute_dims`` of 1Konny/FactorVAE (so the same
    generator state gives the same result). The discriminator should see it detached.

    Example::

        >>> import torch
        >>> z = torch.arange(12.0).view(4, 3)
        >>> p = permute_dims(z, torch.Generator().manual_seed(0))
        >>> all(sorted(p[:, j].tolist()) == z[:, j].tolist() for j in range(3))
        True
    """
    _check_codes("z", z)
    batch, device = z.shape[0], generator.device if generator is not None else torch.device("cpu")
    perms = [torch.randperm(batch, generator=generator, device=device).to(z.device) for _ in range(z.shape[1])]
    return torch.stack([z[perm, j] for j, perm in enumerate(perms)], dim=1)


def _check_logits(name: str, logits: Tensor) -> None:
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(f"Expected discriminator `{name}` of shape (B, 2), got {tuple(logits.shape)}")


def density_ratio_tc(logits: Tensor) -> Tensor:
    """The density-ratio estimate of the total correlation at each sample of ``q(z)``: ``logits[:, 0] - logits[:, 1]``.

    The discriminator's column 0 scores "drawn from ``q(z)``" and column 1 "drawn from ``prod_j q(z_j)``"; at its
    optimum the difference is ``log q(z) / prod_j q(z_j)``, whose mean over the batch is the TC estimate
    (Kim & Mnih 2018, eq. 3; ``(D_z[:, :1] - D_z[:, 1:]).mean()`` in 1Konny/FactorVAE).

    Returns:
        ``(B,)``; the objective takes its mean.
    """
    _check_logits("logits", logits)
    return logits[:, 0] - logits[:, 1]


def discriminator_loss(logits_q: Tensor, logits_permuted: Tensor) -> Tensor:
    """The discriminator's loss: ``0.5 * (CE(logits_q, 0) + CE(logits_permuted, 1))``, each a batch mean.

    ``logits_q`` are its outputs on samples of ``q(z)`` (class 0), ``logits_permuted`` on :func:`permute_dims` of an
    independent batch (class 1), as 1Konny/FactorVAE's ``D_tc_loss``.
    """
    _check_logits("logits_q", logits_q)
    _check_logits("logits_permuted", logits_permuted)
    zeros = torch.zeros(logits_q.shape[0], dtype=torch.long, device=logits_q.device)
    ones = torch.ones(logits_permuted.shape[0], dtype=torch.long, device=logits_permuted.device)
    return 0.5 * (F.cross_entropy(logits_q, zeros) + F.cross_entropy(logits_permuted, ones))


def dip_covariance(loc: Tensor, log_var: Tensor | None = None, dip_type: DipType = "i") -> Tensor:
    """The covariance DIP-VAE pushes to the identity, ``(D, D)``, over a batch.

    ``"i"``: of the posterior means, ``Cov[mu(x)] = E[mu mu^T] - E[mu] E[mu]^T`` (the batch's population
    covariance); ``"ii"``: of the aggregate posterior, ``Cov[mu(x)] + E[diag(exp(log_var))]`` (Kumar et al. 2018,
    eqs. 6 and 7; disentanglement_lib's ``DIPVAE.regularizer``).

    Raises:
        ValueError: For shapes other than ``(B, D)``, or ``"ii"`` without ``log_var``.
    """
    _check_codes("loc", loc)
    check_choice("dip_type", dip_type, DipType)
    mean = loc.mean(0)
    cov = (loc.unsqueeze(2) * loc.unsqueeze(1)).mean(0) - mean.unsqueeze(1) * mean.unsqueeze(0)
    if dip_type == "i":
        return cov
    if log_var is None or log_var.shape != loc.shape:
        got = None if log_var is None else tuple(log_var.shape)
        raise ValueError(f"Expected `log_var` of shape {tuple(loc.shape)} for DIP-VAE II, got {got}")
    return cov + torch.diag_embed(log_var.exp()).mean(0)


def dip_regularizer(covariance: Tensor, lambda_od: float, lambda_d: float) -> Tensor:
    """``lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2`` (Kumar et al. 2018).

    Example::

        >>> import torch
        >>> dip_regularizer(torch.eye(3), lambda_od=10.0, lambda_d=100.0).item()
        0.0
    """
    if covariance.dim() != 2 or covariance.shape[0] != covariance.shape[1]:
        raise ValueError(f"Expected a square `covariance`, got {tuple(covariance.shape)}")
    check_float("lambda_od", lambda_od, low=0.0)
    check_float("lambda_d", lambda_d, low=0.0)
    diagonal = covariance.diagonal()
    off = covariance - torch.diag_embed(diagonal)
    return lambda_od * off.square().sum() + lambda_d * (diagonal - 1).square().sum()


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    return (a.unsqueeze(1) - b.unsqueeze(0)).square().sum(-1)


def mmd(
    x: Tensor,
    y: Tensor,
    kernel: Kernel = "imq",
    bandwidth: float | None = None,
    scales: Sequence[float] = (1.0,),
) -> Tensor:
    """Unbiased estimate of the squared MMD between samples ``x`` ``(n, D)`` and ``y`` ``(m, D)``.

    ``sum_{i != j} k(x_i, x_j) / (n (n - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
    - 2 sum_{i, j} k(x_i, y_j) / (n m)``, summed over the kernels ``k`` with ``C = bandwidth * s`` for each ``s`` in
    ``scales``: ``"rbf"`` ``exp(-|a - b|^2 / C)``, ``"imq"`` ``C / (C + |a - b|^2)``. The default ``bandwidth`` is
    ``2 D``, WAE's choice for a standard-normal prior (``2 * zdim * pz_scale^2``); WAE's inverse-multiquadric penalty
    is ``mmd(qz, pz, "imq", scales=WAE_SCALES)``, and its RBF branch with kernel width ``sigma2_k`` is
    ``mmd(qz, pz, "rbf", bandwidth=2 * sigma2_k)``. InfoVAE's code takes the RBF kernel
    ``exp(-mean_j (a_j - b_j)^2 / D)`` (``bandwidth=D**2``) with the biased statistic (the diagonals included);
    this is its unbiased form. Unbiased, so it can be negative.

    Raises:
        ValueError: For fewer than two samples on a side, mismatched dimensions, an unknown kernel, or a
            non-positive bandwidth or scale.

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> same = mmd(torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g))
        >>> shifted = mmd(torch.randn(500, 2, generator=g) + 1.0, torch.randn(500, 2, generator=g))
        >>> bool(abs(same) < 0.01 < shifted)
        True
    """
    _check_codes("x", x)
    _check_codes("y", y)
    if x.shape[1] != y.shape[1] or x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(
            "Expected `x` (n, D) and `y` (m, D) with n, m >= 2 and the same D, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    check_choice("kernel", kernel, Kernel)
    base = 2.0 * x.shape[1] if bandwidth is None else check_float("bandwidth", bandwidth, low=0.0, strict_low=True)
    n, m = x.shape[0], y.shape[0]
    dxx, dyy, dxy = _squared_distances(x, x), _squared_distances(y, y), _squared_distances(x, y)
    off_x = 1.0 - torch.eye(n, dtype=dxx.dtype, device=dxx.device)
    off_y = 1.0 - torch.eye(m, dtype=dyy.dtype, device=dyy.device)
    total = x.new_zeros(())
    for s in scales:
        c = base * check_float("scales", s, low=0.0, strict_low=True)
        if kernel == "rbf":
            kxx, kyy, kxy = torch.exp(-dxx / c), torch.exp(-dyy / c), torch.exp(-dxy / c)
        else:
            kxx, kyy, kxy = c / (c + dxx), c / (c + dyy), c / (c + dxy)
        total = total + (kxx * off_x).sum() / (n * (n - 1)) + (kyy * off_y).sum() / (m * (m - 1))
        total = total - 2.0 * kxy.sum() / (n * m)
    return total


__all__ = [
    "DipType",
    "Kernel",
    "WAE_SCALES",
    "density_ratio_tc",
    "dip_covariance",
    "dip_regularizer",
    "discriminator_loss",
    "mmd",
    "permute_dims",
]
