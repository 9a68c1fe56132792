"""Posterior-collapse metrics over a whole evaluation set, identical on one process and under DDP.

The math lives in :mod:`lightning_vae.functional.collapse`; these classes only keep the sufficient
statistics as torchmetrics states (summed or concatenated across processes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_vae.checks import check_choice, check_float
from lightning_vae.functional.collapse import (
    ACTIVITY_THRESHOLD,
    KL_THRESHOLD,
    EntropyEstimate,
    _kl_per_dim_update,
    _mean_variance_compute,
    _moments_update,
    _noise_update,
    count_active,
    count_collapsed,
    mutual_information,
)


class KLPerDimension(Metric):
    """KL of each latent dimension averaged over all examples seen, ``(D,)`` in nats.

    ``update`` takes the elementwise KL ``(B, D)`` of a batch (for a Gaussian posterior against the
    standard normal, :func:`~lightning_vae.functional.collapse.kl_to_standard_normal` gives it), or
    the batch-averaged KL ``(D,)`` that ``VAE``'s steps return together with ``batch_size``.

    Example::

        >>> import torch
        >>> metric = KLPerDimension()
        >>> metric.update(torch.tensor([[0.0, 1.0], [0.0, 3.0]]))
        >>> metric.update(torch.tensor([0.0, 4.0]), batch_size=2)
        >>> metric.compute()
        tensor([0., 3.], dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False

    kl_sum: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("kl_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, kl: Tensor, batch_size: int | None = None) -> None:
        """Add a batch: elementwise KL ``(B, D)``, or the batch mean ``(D,)`` with ``batch_size``."""
        kl_sum, n = _kl_per_dim_update(kl.detach(), batch_size)
        self.kl_sum = self.kl_sum + kl_sum.to(self.kl_sum.device)
        self.total = self.total + n

    def compute(self) -> Tensor:
        return self.kl_sum / self.total


class CollapsedDimensions(KLPerDimension):
    """Number of latent dimensions whose data-averaged KL is below ``threshold`` nats (default 0.01).

    Args:
        threshold: KL in nats under which a dimension counts as collapsed.

    Example::

        >>> import torch
        >>> metric = CollapsedDimensions()
        >>> metric.update(torch.tensor([[0.001, 1.0, 0.0]]))
        >>> metric.compute()
        tensor(2)
    """

    higher_is_better = False

    def __init__(self, threshold: float = KL_THRESHOLD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = check_float("threshold", threshold, low=0.0)

    def compute(self) -> Tensor:
        return count_collapsed(super().compute(), self.threshold)


class PosteriorMeanVariance(Metric):
    """Variance over all examples seen of the posterior mean of each latent dimension, ``(D,)`` (float64).

    Per-batch count, mean and sum of squared deviations are kept and merged exactly at the end
    (:func:`~lightning_vae.functional.collapse.merge_moments`), so the result is the variance over
    the whole set however it was split into batches and processes. Means estimated by sampling (a posterior
    whose mean has no closed form) come with their sampling variances, whose average is subtracted
    (:func:`~lightning_vae.functional.collapse.sampled_means`).

    Example::

        >>> import torch
        >>> metric = PosteriorMeanVariance()
        >>> metric.update(torch.tensor([[0.0, 5.0], [1.0, 5.0]]))
        >>> metric.update(torch.tensor([[2.0, 5.0]]))
        >>> metric.compute()  # variances of (0, 1, 2) and (5, 5, 5)
        tensor([1., 0.], dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False

    counts: list[Tensor]
    means: list[Tensor]
    m2s: list[Tensor]
    noises: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("counts", default=[], dist_reduce_fx="cat")
        self.add_state("means", default=[], dist_reduce_fx="cat")
        self.add_state("m2s", default=[], dist_reduce_fx="cat")
        self.add_state("noises", default=[], dist_reduce_fx="cat")

    def update(self, posterior_mean: Tensor, noise: Tensor | None = None) -> None:
        """Add the posterior means ``(B, D)`` of a batch; ``noise``: their sampling variances when estimated."""
        count, mean, m2 = _moments_update(posterior_mean, "posterior_mean")
        self.counts.append(count.reshape(1))
        self.means.append(mean.unsqueeze(0))
        self.m2s.append(m2.unsqueeze(0))
        noise_sum = torch.zeros_like(mean) if noise is None else _noise_update(noise, posterior_mean.shape)
        self.noises.append(noise_sum.unsqueeze(0))

    def compute(self) -> Tensor:
        counts = dim_zero_cat(self.counts)
        k = counts.shape[0]
        means, m2s, noises = (dim_zero_cat(s).reshape(k, -1) for s in (self.means, self.m2s, self.noises))
        return _mean_variance_compute(counts, means, m2s, noises)


class ActiveUnits(PosteriorMeanVariance):
    """Active units (Burda et al. 2015): dimensions whose posterior mean has variance above ``threshold`` over the set.

    Args:
        threshold: Variance of the posterior mean above which a dimension is active (default 0.01).

    Example::

        >>> import torch
        >>> metric = ActiveUnits()
        >>> metric.update(torch.stack([torch.linspace(-1, 1, 50), torch.zeros(50)], dim=1))
        >>> metric.compute()
        tensor(1)
    """

    higher_is_better = True

    def __init__(self, threshold: float = ACTIVITY_THRESHOLD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = check_float("threshold", threshold, low=0.0)

    def compute(self) -> Tensor:
        return count_active(super().compute(), self.threshold)


class MutualInformation(Metric):
    """``I(x; z)`` under q (He et al. 2019), averaged over batches weighted by their size, in nats.

    Each batch gives the estimate of
    :func:`~lightning_vae.functional.collapse.mutual_information`, whose aggregate posterior is
    estimated within the batch, so the value depends on the batch size and cannot exceed its log.
    ``entropy`` picks the estimate of the posterior entropy (see that function).
    Under DDP each process adds its own batches; with the same batches the result equals the
    one-process result.

    Args:
        entropy: ``"sampled"`` (default, lower variance) or ``"exact"`` (closed form, as He et al.).

    Example::

        >>> import math, torch
        >>> from lightning_vae.distributions import DiagonalGaussian
        >>> metric = MutualInformation()
        >>> loc = 100.0 * torch.arange(8.0).unsqueeze(1).expand(8, 2)  # posteriors far apart: z identifies x
        >>> metric.update(DiagonalGaussian(loc, torch.zeros(8, 2)), loc + 1.0)  # samples one σ off in each dimension
        >>> round(metric.compute().item(), 4), round(math.log(8), 4)  # the most the estimator gives with B = 8
        (2.0794, 2.0794)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    mi_sum: Tensor
    total: Tensor

    def __init__(self, entropy: EntropyEstimate = "sampled", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entropy: EntropyEstimate = check_choice("entropy", entropy, EntropyEstimate)
        self.add_state("mi_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, posterior: Distribution, z: Tensor | None = None) -> None:
        """Add a batch: ``q(z|x)`` (batch shape ``(B,)``, event ``(D,)``) and optionally one sample per example."""
        mi = mutual_information(posterior, z, self.entropy)
        n = posterior.batch_shape[0]
        self.mi_sum = self.mi_sum + mi.to(self.mi_sum.device) * n
        self.total = self.total + n

    def compute(self) -> Tensor:
        return self.mi_sum / self.total


__all__ = [
    "ActiveUnits",
    "CollapsedDimensions",
    "KLPerDimension",
    "MutualInformation",
    "PosteriorMeanVariance",
]
