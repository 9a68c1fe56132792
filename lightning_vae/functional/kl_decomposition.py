"""The average KL taken apart: index-code mutual information + total correlation + dimension-wise KL.

For diagonal-Gaussian posteriors ``q(z|x_n)`` over a set of ``N`` examples, the aggregate posterior is the mixture
``q(z) = 1/N sum_n q(z|x_n)`` and (Hoffman & Johnson 2016; Chen et al. 2018, eq. 2), with a factorised prior,

.. code-block:: text

    1/N sum_n KL(q(z|x_n) || p(z)) = I_q(n; z)                      index-code mutual information
                                   + KL(q(z) || prod_j q(z_j))       total correlation
                                   + sum_j KL(q(z_j) || p(z_j))      dimension-wise KL

Two ways to evaluate ``log q(z)`` and ``log q(z_j)`` at samples ``z ~ q(z)``:

- :func:`aggregate_log_density`: the exact sum over the whole set (chunked: memory bounded by ``chunk_size``
  elements whatever ``N``), as ``elbo_decomposition.py`` of Chen et al.'s code; :func:`kl_decomposition` then
  takes the expectations under ``q(z|x_n)`` that have a closed form in closed form (the entropy of each posterior
  and its cross-entropy with the prior), so the three parts sum to the closed-form average KL exactly and only
  the terms with ``log q(z)`` are Monte Carlo averages over the samples.
- :func:`minibatch_log_density`: the estimators of ``log q(z)`` from one minibatch of ``B`` examples drawn from a
  data set of ``N`` (``vae_quant.py`` of Chen et al.), for the β-TCVAE objective
  (:func:`minibatch_kl_decomposition`): minibatch-weighted sampling (``"mws"``) and minibatch-stratified sampling
  (``"mss"``). See :func:`log_importance_weight_matrix` for the MSS weights and how they differ from that code.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lightning_vae.checks import check_choice, check_int
from lightning_vae.functional.math import at_least_float32

#: The minibatch estimators of ``log q(z)``: minibatch-weighted and minibatch-stratified sampling (Chen et al.).
Estimator = Literal["mws", "mss"]

_LOG_2PI = math.log(2 * math.pi)

#: Default most elements of one ``(samples, posteriors, D)`` block of log-densities (32 MiB in float64).
CHUNK_SIZE = 2**22


class AggregateLogDensity(NamedTuple):
    """``log q(z)`` ``(M,)`` and ``log q(z_j)`` of each dimension ``(M, D)`` at ``M`` samples."""

    joint: Tensor
    marginals: Tensor


class KLParts(NamedTuple):
    """The three parts of the average KL, in nats.

    From :func:`kl_decomposition` each field is a scalar (``dimension_kl_per_dim`` is ``(D,)``); from
    :func:`minibatch_kl_decomposition` each is per example, ``(B,)`` (``dimension_kl_per_dim`` ``(B, D)``), the terms
    the β-TCVAE objective weighs.
    """

    #: Index-code mutual information ``E[log q(z|x) - log q(z)]``.
    mutual_info: Tensor
    #: Total correlation ``E[log q(z) - sum_j log q(z_j)]``.
    total_correlation: Tensor
    #: Dimension-wise KL ``E[sum_j log q(z_j) - log p(z_j)]``.
    dimension_kl: Tensor
    #: The dimension-wise KL of each dimension.
    dimension_kl_per_dim: Tensor
    #: ``KL(q(z|x) || p(z))`` averaged over the set (closed form), or per example at the sample (minibatch form):
    #: the sum of the three parts.
    kl: Tensor


def gaussian_log_density(z: Tensor, loc: Tensor, log_var: Tensor) -> Tensor:
    """Elementwise ``log N(z; loc, exp(log_var))`` (broadcast, nothing summed).

    Example::

        >>> import torch
        >>> round(gaussian_log_density(torch.zeros(1), torch.zeros(1), torch.zeros(1)).item(), 6)  # -log(2 pi) / 2
        -0.918939
    """
    return -0.5 * ((z - loc).square() * torch.exp(-log_var) + log_var + _LOG_2PI)


def _check_posteriors(loc: Tensor, log_var: Tensor) -> None:
    if loc.dim() != 2 or loc.shape != log_var.shape or loc.shape[0] < 1:
        raise ValueError(
            f"Expected `loc` and `log_var` of the same shape (N, D) with N >= 1, got {tuple(loc.shape)} and "
            f"{tuple(log_var.shape)}"
        )


def _check_samples(z: Tensor, loc: Tensor) -> None:
    if z.dim() != 2 or z.shape[1] != loc.shape[1]:
        raise ValueError(f"Expected samples `z` of shape (M, {loc.shape[1]}), got {tuple(z.shape)}")


def _common_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return at_least_float32(torch.empty((), dtype=dtype)).dtype


def aggregate_log_density(z: Tensor, loc: Tensor, log_var: Tensor, chunk_size: int = CHUNK_SIZE) -> AggregateLogDensity:
    """``log q(z)`` and ``log q(z_j)`` of the aggregate posterior of ``N`` diagonal Gaussians, summed exactly.

    ``log q(z_m) = logsumexp_n log q(z_m | x_n) - log N`` and the same for each dimension, evaluated in blocks of
    at most ``chunk_size`` (sample, posterior, dimension) elements whose log-sum-exps are combined with
    ``logaddexp``: the memory stays bounded whatever ``M`` and ``N``; the cost is ``M * N * D``. A quantity to
    report, not to train with: no gradient flows through it (the minibatch estimators are for objectives).

    Args:
        z: Samples ``(M, D)``.
        loc: Posterior means ``(N, D)``.
        log_var: Posterior log-variances ``(N, D)``.
        chunk_size: Most elements of one block.

    Raises:
        ValueError: For mismatched shapes or a ``chunk_size`` below 1.

    Example::

        >>> import torch
        >>> loc, log_var = torch.tensor([[-1.0], [1.0]]), torch.zeros(2, 1)
        >>> out = aggregate_log_density(torch.tensor([[1.0]]), loc, log_var)
        >>> mixture = torch.distributions.Normal(loc[:, 0], 1.0).log_prob(torch.tensor(1.0)).exp().mean().log()
        >>> torch.allclose(out.joint, mixture.reshape(1))
        True
    """
    _check_posteriors(loc, log_var)
    _check_samples(z, loc)
    check_int("chunk_size", chunk_size, low=1)
    dtype = _common_dtype(z, loc, log_var)
    z, loc, log_var = z.to(dtype), loc.to(dtype), log_var.to(dtype)
    (m, d), n = z.shape, loc.shape[0]
    cols = max(1, min(n, chunk_size // d))
    rows = max(1, min(m, chunk_size // (cols * d)))
    joint = torch.full((m,), -math.inf, dtype=dtype, device=z.device)
    marginals = torch.full((m, d), -math.inf, dtype=dtype, device=z.device)
    # gaussian_log_density written as -0.5 ((z - loc) / std)^2 - 0.5 (log_var + log 2 pi), one block buffer
    # updated in place: the cost is a few passes over M x N x D elements and no other block-sized allocation.
    inv_std = torch.exp(-0.5 * log_var)
    offset = 0.5 * (log_var + _LOG_2PI)
    with torch.no_grad():
        for r in range(0, m, rows):
            zr = z[r : r + rows].unsqueeze(1)  # (r, 1, D)
            for c in range(0, n, cols):
                block = zr - loc[c : c + cols]  # (r, c, D)
                block.mul_(inv_std[c : c + cols]).square_().mul_(-0.5).sub_(offset[c : c + cols])
                joint[r : r + rows] = torch.logaddexp(joint[r : r + rows], torch.logsumexp(block.sum(-1), dim=1))
                top = block.amax(dim=1, keepdim=True)  # (r, 1, D); finite: every log-density is
                summed = block.sub_(top).exp_().sum(dim=1)
                marginals[r : r + rows] = torch.logaddexp(marginals[r : r + rows], summed.log_().add_(top[:, 0]))
    log_n = math.log(n)
    return AggregateLogDensity(joint - log_n, marginals - log_n)


def _prior(
    d: int, dtype: torch.dtype, device: torch.device, prior_loc: Tensor | None, prior_log_var: Tensor | None
) -> tuple[Tensor, Tensor]:
    """A factorised Gaussian prior's ``(loc, log_var)`` as ``(D,)`` tensors (default: the standard normal)."""
    zeros = torch.zeros(d, dtype=dtype, device=device)
    ploc = zeros if prior_loc is None else torch.as_tensor(prior_loc, dtype=dtype, device=device).expand(d)
    plv = zeros if prior_log_var is None else torch.as_tensor(prior_log_var, dtype=dtype, device=device).expand(d)
    return ploc, plv


def kl_decomposition(
    loc: Tensor,
    log_var: Tensor,
    z: Tensor | None = None,
    prior_loc: Tensor | None = None,
    prior_log_var: Tensor | None = None,
    chunk_size: int = CHUNK_SIZE,
    generator: torch.Generator | None = None,
) -> KLParts:
    """Mutual information, total correlation and dimension-wise KL of the aggregate posterior of a set.

    ``q(z)`` is the mixture of the ``N`` posteriors ``N(loc_n, exp(log_var_n))``, summed exactly
    (:func:`aggregate_log_density`). The expectations over ``z ~ q(z)`` of ``log q(z)`` and ``log q(z_j)`` are Monte
    Carlo averages over the samples ``z`` (one per example, as a validation step draws them, or any uniform subset
    of the examples' samples); those of ``log q(z|x_n)`` and ``log p(z)`` are in closed form. So the three parts
    sum to the closed-form average ``KL(q(z|x) || p(z))`` whatever the samples, and each part's Monte Carlo error
    shrinks with their number (Chen et al.'s ``elbo_decomposition.py`` takes the same route).

    Args:
        loc: Posterior means ``(N, D)``.
        log_var: Posterior log-variances ``(N, D)``.
        z: Samples of ``q(z)`` ``(M, D)``; ``None`` draws one from each posterior (with ``generator``).
        prior_loc: Mean of the factorised Gaussian prior, a scalar or ``(D,)`` (default 0).
        prior_log_var: Its log-variance, a scalar or ``(D,)`` (default 0: the standard normal).
        chunk_size: Most elements of one block of log-densities.
        generator: Random generator for the samples when ``z`` is ``None``.

    Returns:
        Scalars (``dimension_kl_per_dim`` ``(D,)``), in the floating type of the inputs (at least float32).

    Raises:
        ValueError: For mismatched shapes.

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> loc = torch.randn(200, 2, generator=g, dtype=torch.float64)
        >>> parts = kl_decomposition(loc, torch.full_like(loc, -2.0), generator=g)
        >>> total = parts.mutual_info + parts.total_correlation + parts.dimension_kl
        >>> torch.allclose(total, parts.kl)
        True
    """
    _check_posteriors(loc, log_var)
    dtype = _common_dtype(loc, log_var) if z is None else _common_dtype(z, loc, log_var)
    loc, log_var = loc.to(dtype), log_var.to(dtype)
    if z is None:
        noise = torch.randn(loc.shape, generator=generator, dtype=dtype, device=loc.device)
        z = loc + torch.exp(0.5 * log_var) * noise
    _check_samples(z, loc)
    ploc, plv = _prior(loc.shape[1], dtype, loc.device, prior_loc, prior_log_var)
    # Closed forms, averaged over the N posteriors: E log q(z|x) = -entropy, and E_{q(z_j|x)} log p(z_j).
    log_q_cond = -0.5 * (log_var + (1.0 + _LOG_2PI)).sum(-1).mean()
    cross = -0.5 * (plv + _LOG_2PI + ((loc - ploc).square() + log_var.exp()) * torch.exp(-plv)).mean(0)  # (D,)
    agg = aggregate_log_density(z, loc, log_var, chunk_size)
    log_qz = agg.joint.mean()
    log_qz_dims = agg.marginals.mean(0)
    per_dim = log_qz_dims - cross
    return KLParts(
        mutual_info=log_q_cond - log_qz,
        total_correlation=log_qz - log_qz_dims.sum(),
        dimension_kl=per_dim.sum(),
        dimension_kl_per_dim=per_dim,
        kl=log_q_cond - cross.sum(),
    )


def log_importance_weight_matrix(
    batch_size: int, dataset_size: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> Tensor:
    """Log-weights ``(B, B)`` of minibatch-stratified sampling: row ``i`` weighs ``q(z_i | x_j)`` for each ``j``.

    With ``M = B - 1`` other examples in the batch and ``N`` in the data set (Chen et al. 2018, appendix C.2):
    ``1/N`` for the example ``z_i`` was drawn from (the diagonal), ``(N - M) / (N M)`` for one other example (the
    next one, cyclically) and ``1/M`` for the remaining ``M - 1``. Each row sums to 1, so ``q(z_i)`` is estimated
    without bias for a batch drawn uniformly without replacement.

    Convention: ``_log_importance_weight_matrix`` of ``vae_quant.py`` writes these entries with a stride of ``M + 1``
    (= ``B``), which walks down a column rather than the diagonal: there the rows give ``1/N`` to the first example
    and ``(N - M) / (N M)`` to the second (row ``M - 1`` gives both the latter), and the own example of rows
    ``i >= 2`` gets ``1/M`` (its open pull request #1 points this out). Here the stride is ``B + 1`` as the
    appendix's estimator asks, and the last row's stratum entry wraps to column 0.

    Raises:
        ValueError: For a batch below 2 or a data set smaller than the batch.

    Example::

        >>> import torch
        >>> w = log_importance_weight_matrix(4, 100, dtype=torch.float64).exp()
        >>> ones = torch.ones(4, dtype=torch.float64)
        >>> torch.allclose(w.diagonal(), ones / 100), torch.allclose(w.sum(1), ones)
        (True, True)
    """
    check_int("batch_size", batch_size, low=2)
    check_int("dataset_size", dataset_size, low=batch_size)
    n, m = dataset_size, batch_size - 1
    weights = torch.full((batch_size, batch_size), 1.0 / m, dtype=torch.float64)
    index = torch.arange(batch_size)
    weights[index, (index + 1) % batch_size] = (n - m) / (n * m)
    weights[index, index] = 1.0 / n
    return weights.log().to(dtype=dtype, device=device)


def minibatch_log_density(
    z: Tensor, loc: Tensor, log_var: Tensor, dataset_size: int, estimator: Estimator = "mss"
) -> AggregateLogDensity:
    """Estimates of ``log q(z_i)`` and ``log q(z_ij)`` from one minibatch, for samples ``z_i ~ q(z | x_i)``.

    - ``"mws"`` (minibatch-weighted sampling, as ``vae_quant.py``):
      ``log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(B N)``. Its weights sum to ``1/N``, not 1: on average the
      estimate is below ``log q(z_i)`` by ``log B`` (posteriors that do not overlap) to about ``log N`` (posteriors
      that all coincide). It is the estimator ``vae_quant.py`` trains with by default; its values are not the
      parts of the KL.
    - ``"mss"`` (minibatch-stratified sampling): ``logsumexp_j (log w_ij + log q(z_i | x_j))`` with the weights of
      :func:`log_importance_weight_matrix`; ``exp`` of it is unbiased for ``q(z_i)`` when the batch is drawn
      uniformly without replacement from the ``N`` examples. Needs ``B >= 2``.

    Args:
        z: One sample per example ``(B, D)``, ``z[i] ~ q(z | x_i)``.
        loc: Posterior means ``(B, D)``.
        log_var: Posterior log-variances ``(B, D)``.
        dataset_size: ``N``, the number of examples the batch is drawn from (at least ``B``).
        estimator: ``"mws"`` or ``"mss"``.

    Raises:
        ValueError: For mismatched shapes, an unknown estimator, ``dataset_size < B``, or ``"mss"`` with ``B < 2``.
    """
    _check_posteriors(loc, log_var)
    if z.shape != loc.shape:
        raise ValueError(f"Expected samples `z` of the posteriors' shape {tuple(loc.shape)}, got {tuple(z.shape)}")
    check_choice("estimator", estimator, Estimator)
    batch = loc.shape[0]
    check_int("dataset_size", dataset_size, low=batch)
    dtype = _common_dtype(z, loc, log_var)
    # [i, j, d] = log q(z_id | x_j)
    matrix = gaussian_log_density(z.to(dtype).unsqueeze(1), loc.to(dtype).unsqueeze(0), log_var.to(dtype).unsqueeze(0))
    if estimator == "mws":
        offset = math.log(batch * dataset_size)
        return AggregateLogDensity(
            torch.logsumexp(matrix.sum(2), dim=1) - offset, torch.logsumexp(matrix, dim=1) - offset
        )
    weights = log_importance_weight_matrix(batch, dataset_size, dtype=dtype, device=matrix.device)
    return AggregateLogDensity(
        torch.logsumexp(weights + matrix.sum(2), dim=1), torch.logsumexp(weights.unsqueeze(2) + matrix, dim=1)
    )


def minibatch_kl_decomposition(
    z: Tensor,
    loc: Tensor,
    log_var: Tensor,
    dataset_size: int,
    estimator: Estimator = "mss",
    prior_loc: Tensor | None = None,
    prior_log_var: Tensor | None = None,
) -> KLParts:
    """The three terms of the β-TCVAE objective for each example of a minibatch (Chen et al. 2018, eq. 4).

    At the sample ``z_i ~ q(z | x_i)``, with ``log q(z_i)`` and ``log q(z_ij)`` from :func:`minibatch_log_density`:
    ``mutual_info = log q(z_i | x_i) - log q(z_i)``, ``total_correlation = log q(z_i) - sum_j log q(z_ij)`` and
    ``dimension_kl = sum_j log q(z_ij) - log p(z_i)``; ``kl = log q(z_i | x_i) - log p(z_i)`` is their sum, the
    single-sample Monte Carlo KL. ``vae_quant.py``'s objective is
    ``log p(x|z) - alpha * mutual_info - beta * total_correlation - gamma * dimension_kl``.

    The estimators read only this batch: under DDP each process's terms are estimates from its own batch, with
    ``dataset_size`` the size of the whole data set (each process's batch is a uniform draw from it).

    Args:
        z: One sample per example ``(B, D)``.
        loc: Posterior means ``(B, D)``.
        log_var: Posterior log-variances ``(B, D)``.
        dataset_size: Number of examples in the data set the batch is drawn from.
        estimator: ``"mws"`` or ``"mss"``.
        prior_loc: Mean of the factorised Gaussian prior, a scalar or ``(D,)`` (default 0).
        prior_log_var: Its log-variance, a scalar or ``(D,)`` (default 0).

    Returns:
        Per-example terms ``(B,)`` (``dimension_kl_per_dim`` ``(B, D)``).

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> loc, log_var = torch.randn(8, 3, generator=g), torch.zeros(8, 3)
        >>> z = loc + torch.randn(8, 3, generator=g)
        >>> parts = minibatch_kl_decomposition(z, loc, log_var, dataset_size=1000)
        >>> torch.allclose(parts.mutual_info + parts.total_correlation + parts.dimension_kl, parts.kl)
        True
    """
    agg = minibatch_log_density(z, loc, log_var, dataset_size, estimator)
    dtype = agg.joint.dtype
    z, loc, log_var = z.to(dtype), loc.to(dtype), log_var.to(dtype)
    ploc, plv = _prior(loc.shape[1], dtype, loc.device, prior_loc, prior_log_var)
    log_q_cond = gaussian_log_density(z, loc, log_var).sum(-1)
    log_p_dims = gaussian_log_density(z, ploc, plv)
    per_dim = agg.marginals - log_p_dims
    return KLParts(
        mutual_info=log_q_cond - agg.joint,
        total_correlation=agg.joint - agg.marginals.sum(-1),
        dimension_kl=per_dim.sum(-1),
        dimension_kl_per_dim=per_dim,
        kl=log_q_cond - log_p_dims.sum(-1),
    )


__all__ = [
    "AggregateLogDensity",
    "CHUNK_SIZE",
    "Estimator",
    "KLParts",
    "aggregate_log_density",
    "gaussian_log_density",
    "kl_decomposition",
    "log_importance_weight_matrix",
    "minibatch_kl_decomposition",
    "minibatch_log_density",
]
