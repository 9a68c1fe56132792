"""The KL decomposition of the aggregate posterior of an evaluation set, as a torchmetrics metric."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_vae.checks import check_int
from lightning_vae.functional.kl_decomposition import CHUNK_SIZE, kl_decomposition

#: The values :meth:`KLDecomposition.compute` returns (scalars), in the order they add up to ``kl``.
PARTS = ("mutual_info", "total_correlation", "dimension_kl")


class KLDecomposition(Metric):
    """Index-code mutual information, total correlation and dimension-wise KL of the posteriors of a whole set.

    Keeps every example's diagonal-Gaussian posterior ``(loc, log_var)`` and its sample ``z`` (concatenated across
    processes, so under DDP every process holds the whole set) and computes
    :func:`~lightning_vae.functional.kl_decomposition.kl_decomposition` of them in float64: ``q(z)`` summed exactly
    over all the posteriors, the expectations of ``log q(z)`` and ``log q(z_j)`` averaged over the samples (at most
    ``max_points`` of them, a seeded uniform subset: the cost is ``points x N x D``), the rest in closed form. So
    ``mutual_info + total_correlation + dimension_kl = kl``, the average ``KL(q(z|x) || p(z))`` of the set.

    ``compute()`` returns ``{"mutual_info", "total_correlation", "dimension_kl", "kl"}`` (float64 scalars) and
    ``"dimension_kl_per_dim"`` ``(D,)``. Every process computes the same numbers from the gathered set; with more
    samples than ``max_points`` the subset follows the gathered order, which under DDP differs from one process's.

    Args:
        max_points: Most samples at which ``log q(z)`` is evaluated; ``None`` for all.
        chunk_size: Most elements of one block of log-densities (memory bound).
        seed: Seed of the subset of samples.
        prior_loc: Mean of the factorised Gaussian prior, a scalar or ``(D,)`` (default 0).
        prior_log_var: Its log-variance (default 0: the standard normal).

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> metric = KLDecomposition()
        >>> for _ in range(3):
        ...     loc, log_var = torch.randn(50, 2, generator=g), torch.full((50, 2), -1.0)
        ...     metric.update(loc, log_var, loc + (0.5 * log_var).exp() * torch.randn(50, 2, generator=g))
        >>> parts = metric.compute()
        >>> torch.allclose(parts["mutual_info"] + parts["total_correlation"] + parts["dimension_kl"], parts["kl"])
        True
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    loc: list[Tensor]
    log_var: list[Tensor]
    z: list[Tensor]

    def __init__(
        self,
        max_points: int | None = 4096,
        chunk_size: int = CHUNK_SIZE,
        seed: int = 0,
        prior_loc: Tensor | float | None = None,
        prior_log_var: Tensor | float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_points = None if max_points is None else check_int("max_points", max_points, low=1)
        self.chunk_size = check_int("chunk_size", chunk_size, low=1)
        self.seed = check_int("seed", seed)
        self.prior_loc, self.prior_log_var = prior_loc, prior_log_var
        for name in ("loc", "log_var", "z"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, loc: Tensor, log_var: Tensor, z: Tensor) -> None:
        """Add the posteriors ``(B, D)`` of a batch and one sample of each ``(B, D)``."""
        if loc.dim() != 2 or log_var.shape != loc.shape or z.shape != loc.shape:
            raise ValueError(
                f"Expected `loc`, `log_var` and `z` of the same shape (B, D), got {tuple(loc.shape)}, "
                f"{tuple(log_var.shape)} and {tuple(z.shape)}"
            )
        self.loc.append(loc.detach())
        self.log_var.append(log_var.detach())
        self.z.append(z.detach())

    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.loc, list) and not self.loc:
            raise ValueError("KLDecomposition needs posteriors before compute()")
        loc, log_var, z = (dim_zero_cat(s).double() for s in (self.loc, self.log_var, self.z))
        if self.max_points is not None and z.shape[0] > self.max_points:
            generator = torch.Generator().manual_seed(self.seed)
            z = z[torch.randperm(z.shape[0], generator=generator)[: self.max_points].to(z.device)]
        prior_loc, prior_log_var = (
            None if p is None else torch.as_tensor(p, dtype=torch.float64, device=loc.device)
            for p in (self.prior_loc, self.prior_log_var)
        )
        parts = kl_decomposition(loc, log_var, z, prior_loc, prior_log_var, chunk_size=self.chunk_size)
        return {name: getattr(parts, name) for name in (*PARTS, "kl", "dimension_kl_per_dim")}


__all__ = ["KLDecomposition", "PARTS"]
