"""The importance-weighted negative log-likelihood (Burda et al. 2015) as a torchmetrics metric."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_vae.checks import check_choice, check_int
from lightning_vae.functional.math import bits_per_dim
from lightning_vae.functional.nll import IW_CHUNK_SIZE, iw_nll
from lightning_vae.protocols import SupportsLogJoint, require

#: The units :class:`ImportanceWeightedNLL` reports in.
NLLUnit = Literal["nats", "bits_per_dim"]


class ImportanceWeightedNLL(Metric):
    """``-log p(x)`` estimated with ``k`` importance samples, averaged over all examples seen.

    ``update(model, x)`` needs a model that keeps the protocol
    :class:`~lightning_vae.protocols.SupportsLogJoint`: ``encode(x) -> q(z|x)`` and
    ``log_joint(x, z) -> log p(x, z)`` (``VAE`` has both). Samples are decoded in chunks of at most
    ``chunk_size`` (sample, example) pairs, so memory stays bounded for any ``k``.

    Args:
        n_samples: Importance samples ``k`` per example (5000 in Burda et al. 2015).
        chunk_size: Most (sample, example) pairs decoded at once (2048, as ``VAE``'s ``iw_chunk_size``).
        unit: ``"nats"`` (per example) or ``"bits_per_dim"`` (nats / (data dimensions · ln 2)).

    Raises:
        TypeError: For a non-int ``n_samples`` or ``chunk_size``, or a ``unit`` that is not a string.
        ValueError: For ``n_samples`` or ``chunk_size`` below 1, or an unknown ``unit``.

    Example::

        >>> import torch
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> from lightning_vae import VAE
        >>> vae = VAE(MLPEncoder((1, 4, 4), latent_dim=2), MLPDecoder(2, (1, 4, 4)))
        >>> metric = ImportanceWeightedNLL(n_samples=100, unit="bits_per_dim")
        >>> metric.update(vae, torch.bernoulli(torch.rand(8, 1, 4, 4)))
        >>> metric.compute().shape
        torch.Size([])
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    nll_sum: Tensor
    total: Tensor

    def __init__(
        self,
        n_samples: int = 5000,
        chunk_size: int = IW_CHUNK_SIZE,
        unit: NLLUnit = "nats",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_samples = check_int("n_samples", n_samples, low=1)
        self.chunk_size = check_int("chunk_size", chunk_size, low=1)
        self.unit: NLLUnit = check_choice("unit", unit, NLLUnit)
        self.num_dims: int | None = None
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, model: Any, x: Tensor) -> None:
        """Add the batch ``x`` ``(B, *data_shape)`` under ``model``.

        Raises:
            TypeError: If ``model`` does not keep :class:`~lightning_vae.protocols.SupportsLogJoint`.
        """
        require(model, SupportsLogJoint, "ImportanceWeightedNLL")
        nll = iw_nll(model, x, n_samples=self.n_samples, chunk_size=self.chunk_size)
        self.num_dims = math.prod(x.shape[1:])
        self.nll_sum = self.nll_sum + nll.double().sum().to(self.nll_sum.device)
        self.total = self.total + x.shape[0]

    def compute(self) -> Tensor:
        nats = self.nll_sum / self.total
        if self.unit == "nats":
            return nats
        if self.num_dims is None:
            raise ValueError("Bits per dimension need the data shape: call `update` before `compute`")
        return torch.as_tensor(bits_per_dim(nats, self.num_dims))


__all__ = ["ImportanceWeightedNLL"]
