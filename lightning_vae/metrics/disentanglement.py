"""The mutual information gap (Chen et al. 2018) as a torchmetrics metric over data with known factors."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_vae.checks import check_int
from lightning_vae.functional.disentanglement import mutual_information_gap


class MutualInformationGap(Metric):
    """MIG between latent codes (usually posterior means) and ground-truth discrete factors, in ``[0, 1]``.

    Codes and factors of every batch are kept (concatenated across processes) and the MIG of the
    whole set is computed at the end by
    :func:`~lightning_vae.functional.disentanglement.mutual_information_gap`; on
    :class:`~lightning_vae.data.ShapesDataModule` the batches are ``(images, factors)``.

    Args:
        n_bins: Equal-width bins per latent dimension (20, as in the common benchmarks).

    Example::

        >>> import torch
        >>> f = torch.cartesian_prod(torch.arange(5), torch.arange(4))
        >>> metric = MutualInformationGap(n_bins=5)
        >>> metric.update(f[:10].float(), f[:10])
        >>> metric.update(f[10:].float(), f[10:])
        >>> round(metric.compute().item(), 4)
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    codes: list[Tensor]
    factors: list[Tensor]

    def __init__(self, n_bins: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_bins = check_int("n_bins", n_bins, low=2)
        self.add_state("codes", default=[], dist_reduce_fx="cat")
        self.add_state("factors", default=[], dist_reduce_fx="cat")

    def update(self, codes: Tensor, factors: Tensor) -> None:
        """Add latent codes ``(B, D)`` and integer factors ``(B, K)`` of the same examples."""
        if codes.dim() != 2 or factors.dim() != 2 or codes.shape[0] != factors.shape[0]:
            raise ValueError(
                "Expected codes (B, D) and factors (B, K) with the same B, got "
                f"{tuple(codes.shape)} and {tuple(factors.shape)}"
            )
        # float64 codes stay float64 (others are exact in float32), so the metric equals the functional form.
        self.codes.append(codes.detach().to(torch.float64 if codes.dtype == torch.float64 else torch.float32))
        self.factors.append(factors.detach().long())

    def compute(self) -> Tensor:
        codes, factors = dim_zero_cat(self.codes), dim_zero_cat(self.factors)
        return mutual_information_gap(codes, factors.reshape(codes.shape[0], -1), self.n_bins).to(torch.float64)


__all__ = ["MutualInformationGap"]
