"""Posterior-collapse diagnostics: KL per latent dimension, active units and the mutual information I(x; z).

Each diagnostic comes as an ``_update`` that turns one batch into sufficient statistics and a
``_compute`` that turns accumulated statistics into the value, so a torchmetrics ``Metric`` can
sum (or concatenate) the statistics across batches and processes and give the number one process
would give on the whole set. The public functions compute the value of one set in one call.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torch.distributions import Distribution

from lightning_vae.checks import check_choice, check_int, check_type
from lightning_vae.functional.kl import gaussian_kl

#: How :func:`mutual_information` estimates the posterior entropy.
EntropyEstimate = Literal["sampled", "exact"]

#: Default thresholds: a latent dimension whose KL or posterior-mean variance is below 0.01 counts as unused.
KL_THRESHOLD = 0.01
ACTIVITY_THRESHOLD = 0.01


def _check_2d(name: str, x: Tensor) -> None:
    """``TypeError`` unless ``x`` is a tensor, ``ValueError`` unless it has shape ``(B, D)``."""
    if check_type(name, x, Tensor, "a tensor").dim() != 2:
        raise ValueError(f"Expected `{name}` to have shape (B, D), got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------- KL per dimension
def kl_to_standard_normal(mean: Tensor, variance: Tensor) -> Tensor:
    """``KL(N(mean, variance) || N(0, 1))`` of each example and latent dimension, shape ``(B, D)``.

    Example::

        >>> import torch
        >>> kl_to_standard_normal(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([[0.0000, 0.5000]])
    """
    return gaussian_kl(mean.float(), torch.log(variance.float()))


def _kl_per_dim_update(kl: Tensor, batch_size: int | None = None) -> tuple[Tensor, int]:
    """``(sum over examples of the KL of each dimension, number of examples)`` for one batch.

    ``kl`` is the elementwise KL ``(B, D)``, or, with ``batch_size``, the batch-averaged KL ``(D,)``.
    """
    if batch_size is None:
        _check_2d("kl", kl)
        return kl.double().sum(0), kl.shape[0]
    if check_type("kl", kl, Tensor, "a tensor").dim() != 1:
        raise ValueError(
            f"Expected the batch-averaged KL per dimension of shape (D,) with `batch_size`, got {tuple(kl.shape)}"
        )
    check_int("batch_size", batch_size, low=1)
    return kl.double() * batch_size, batch_size


def count_collapsed(kl_per_dim: Tensor, threshold: float = KL_THRESHOLD) -> Tensor:
    """Number of latent dimensions whose (data-averaged) KL is below ``threshold`` nats.

    Example::

        >>> import torch
        >>> count_collapsed(torch.tensor([0.0, 0.005, 0.3, 2.0]))
        tensor(2)
    """
    return (kl_per_dim < threshold).sum()


# ---------------------------------------------------------------------------------------- active units
def _moments_update(values: Tensor, name: str = "means") -> tuple[Tensor, Tensor, Tensor]:
    """``(count, mean, M2)`` of one batch of ``(B, D)`` values in float64 (M2: sum of squared deviations)."""
    _check_2d(name, values)
    v = values.detach().double()
    mean = v.mean(0)
    count = torch.full((), float(v.shape[0]), dtype=torch.float64, device=v.device)  # filled there: no host copy
    return count, mean, (v - mean).pow(2).sum(0)


def merge_moments(counts: Tensor, means: Tensor, m2s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Merge per-batch ``(count, mean, M2)`` of shapes ``(K,)``, ``(K, D)``, ``(K, D)`` into those of the union.

    The parallel form of Chan et al. (1979): ``M2 = sum_k M2_k + sum_k n_k (mean_k - mean)^2``. It is
    exact and numerically stable, and does not depend on how the set was split into batches or ranks.
    """
    n = counts.sum()
    mean = (counts[:, None] * means).sum(0) / n
    m2 = m2s.sum(0) + (counts[:, None] * (means - mean).pow(2)).sum(0)
    return n, mean, m2


def count_active(variance: Tensor, threshold: float = ACTIVITY_THRESHOLD) -> Tensor:
    """Active units from the variance over the data of each posterior mean ``(D,)``: those above ``threshold``.

    The one count behind :func:`active_units`, :class:`~lightning_vae.metrics.ActiveUnits` and the monitors.

    Example::

        >>> import torch
        >>> count_active(torch.tensor([0.0, 0.005, 0.3, 2.0]))
        tensor(2)
    """
    return (variance > threshold).sum()


def _mean_variance_compute(counts: Tensor, means: Tensor, m2s: Tensor, noise_sums: Tensor | None = None) -> Tensor:
    """Variance over the data of each dimension's posterior mean from per-batch moments, ``(D,)``.

    ``noise_sums`` ``(K, D)``: per batch, the sum over its examples of the sampling variance of an estimated mean
    (:func:`sampled_means`); their average is subtracted, which leaves the variance of the exact means.
    """
    n, _, m2 = merge_moments(counts, means, m2s)
    if n < 2:
        raise ValueError(f"The variance over the data needs at least 2 examples, got {int(n)}")
    variance = m2 / (n - 1)
    if noise_sums is not None:
        variance = variance - noise_sums.sum(0) / n
    return variance


def sampled_means(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior means estimated from ``k`` samples per example ``(k, B, D)``, and the variance of each estimate.

    For a posterior whose mean has no closed form (a flow). The estimate ``m = mean_k z`` has variance
    ``Var_q(z) / k``, estimated by the unbiased sample variance over ``k`` divided by ``k``; over the data,
    ``Var_x(m) = Var_x(E_q[z]) + E_x[Var_q(z) / k]``, so :func:`posterior_mean_variance` with this ``noise``
    estimates ``Var_x(E_q[z])`` without bias (it may fall slightly below 0 for an unused dimension).

    Args:
        samples: ``k >= 2`` samples of each example's posterior, ``(k, B, D)``.

    Returns:
        ``(means, noise)``, each ``(B, D)``, float64.

    Raises:
        ValueError: For samples that are not ``(k, B, D)`` with ``k >= 2``.

    Example::

        >>> import torch
        >>> means, noise = sampled_means(torch.tensor([[[0.0, 1.0]], [[2.0, 1.0]]]))  # k = 2 samples of one example
        >>> means, noise
        (tensor([[1., 1.]], dtype=torch.float64), tensor([[1., 0.]], dtype=torch.float64))
    """
    if check_type("samples", samples, Tensor, "a tensor").dim() != 3 or samples.shape[0] < 2:
        raise ValueError(f"Expected `samples` of shape (k, B, D) with k >= 2, got shape {tuple(samples.shape)}")
    values = samples.detach().double()
    return values.mean(0), values.var(0) / values.shape[0]


def posterior_mean_variance(means: Tensor, noise: Tensor | None = None) -> Tensor:
    """Variance over the data of the posterior mean of each latent dimension (``Cov_x E_q[z]``'s diagonal), ``(D,)``.

    The unbiased (``n - 1``) estimate, in float64. With ``noise`` ``(N, D)``, the sampling variance of estimated
    means (:func:`sampled_means`), its average is subtracted.
    """
    counts, mean, m2 = _moments_update(means)
    noise_sums = None if noise is None else _noise_update(noise, means.shape)[None]
    return _mean_variance_compute(counts[None], mean[None], m2[None], noise_sums)


def _noise_update(noise: Tensor, shape: torch.Size) -> Tensor:
    """The sum over the examples of a batch of the sampling variances of estimated means, ``(D,)`` float64."""
    if check_type("noise", noise, Tensor, "a tensor").shape != shape:
        raise ValueError(f"Expected `noise` of the means' shape {tuple(shape)}, got {tuple(noise.shape)}")
    return noise.detach().double().sum(0)


def active_units(means: Tensor, threshold: float = ACTIVITY_THRESHOLD, noise: Tensor | None = None) -> Tensor:
    """Active units (Burda et al. 2015): latent dimensions whose posterior mean varies over the data.

    ``A_d = Var_x(E_{q(z|x)}[z_d])``; a dimension is active when ``A_d > threshold`` (0.01). Burda
    et al. found the count bimodal, so the exact threshold matters little. Compute it over the whole
    evaluation set, not per batch; :class:`~lightning_vae.metrics.ActiveUnits` does that across
    batches and processes.

    Args:
        means: Posterior means ``(N, D)`` of the whole set.
        threshold: Variance above which a dimension counts as active.
        noise: For means estimated by sampling, their sampling variances ``(N, D)`` (:func:`sampled_means`).

    Example::

        >>> import torch
        >>> means = torch.stack([torch.linspace(-1, 1, 100), torch.full((100,), 0.3)], dim=1)
        >>> active_units(means)
        tensor(1)
    """
    return count_active(posterior_mean_variance(means, noise), threshold)


# ---------------------------------------------------------------------------------------- mutual information
def mutual_information(
    posterior: Distribution, z: Tensor | None = None, entropy: EntropyEstimate = "sampled"
) -> Tensor:
    """The estimate of ``I(x; z)`` under ``q(x, z) = p_data(x) q(z|x)`` of He et al. (2019) on one batch, in nats.

    ``I = E_x[-H(q(z|x))] - E_{q(z)}[log q(z)]``, where the aggregate posterior ``q(z)`` is
    estimated over the batch, ``log q(z_i) ≈ logsumexp_j log q(z_i | x_j) - log B``, with one sample
    ``z_i ~ q(z|x_i)`` per example. The negative entropy is estimated on the same sample,
    ``log q(z_i|x_i)`` (``entropy="sampled"``, the default), or taken in closed form (``"exact"``, as
    in the code of He et al.; needs ``posterior.entropy()``). Both have the same expectation; the
    sampled form has far lower variance near collapse (its noise cancels: it is exactly 0 when every
    x has the same posterior, where the exact form scatters by ``sqrt(D / 2B)``) and when the
    posteriors are well separated.

    Bias. Since ``log q(z_i) >= log q(z_i|x_i) - log B``, the estimate cannot exceed ``log B`` (always
    with the sampled entropy, in expectation with the exact one): with a batch of 128 it saturates
    at 4.85 nats however informative ``z`` is. It is biased low for a finite batch and depends on
    the batch size, so compare values computed with the same batch size.

    Args:
        posterior: ``q(z|x)`` with batch shape ``(B,)`` and event shape ``(D,)``.
        z: One sample per example ``(B, D)``; drawn from ``posterior`` when left out.
        entropy: ``"sampled"`` or ``"exact"``.

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import DiagonalGaussian
        >>> collapsed = DiagonalGaussian(torch.zeros(256, 2), torch.zeros(256, 2))  # q(z|x) = N(0, I) for every x
        >>> mutual_information(collapsed).item()
        0.0
        >>> apart = DiagonalGaussian(1e3 * torch.randn(256, 2), torch.zeros(256, 2))  # z identifies x
        >>> round(mutual_information(apart).item(), 4), round(math.log(256), 4)  # saturates at log B
        (5.5452, 5.5452)
    """
    check_choice("entropy", entropy, EntropyEstimate)
    if len(posterior.batch_shape) != 1 or len(posterior.event_shape) != 1:
        raise ValueError(
            "Expected a posterior with batch shape (B,) and event shape (D,), got batch shape "
            f"{tuple(posterior.batch_shape)} and event shape {tuple(posterior.event_shape)}"
        )
    with torch.no_grad():
        if z is None:
            z = posterior.sample()
        if z.shape != posterior.batch_shape + posterior.event_shape:
            raise ValueError(
                f"Expected one sample per example of shape {tuple(posterior.batch_shape + posterior.event_shape)}, "
                f"got {tuple(z.shape)}"
            )
        batch = z.shape[0]
        # Rows [i, j] = log q(z_i | x_j) are formed a chunk at a time and reduced at once (log-sum-exp over j and
        # the diagonal), so each temporary stays near 2^22 elements for any batch size: no B x B matrix is kept.
        rows = max(1, (1 << 22) // max(batch * z.shape[-1], 1))
        # The per-row results go into buffers allocated once: small tensors kept between the chunks would split
        # the heap's freed chunk memory, and the next chunk would then be placed above them (growth per chunk).
        log_qz = torch.empty(batch, dtype=torch.float64, device=z.device)
        diagonal = torch.empty(batch, dtype=torch.float64, device=z.device) if entropy == "sampled" else None
        for i in range(0, batch, rows):
            chunk = posterior.log_prob(z[i : i + rows].unsqueeze(1)).double()  # (rows, B)
            log_qz[i : i + rows] = torch.logsumexp(chunk, dim=1)
            if diagonal is not None:
                diagonal[i : i + rows] = chunk.diagonal(offset=i)
            del chunk
        neg_entropy = diagonal if diagonal is not None else -posterior.entropy().double()
        log_qz = log_qz - math.log(batch)
        return neg_entropy.mean() - log_qz.mean()


__all__ = [
    "ACTIVITY_THRESHOLD",
    "KL_THRESHOLD",
    "active_units",
    "count_active",
    "count_collapsed",
    "kl_to_standard_normal",
    "merge_moments",
    "mutual_information",
    "posterior_mean_variance",
    "sampled_means",
]
