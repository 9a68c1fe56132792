"""A model whose importance log-weights are given in advance: the IW-NLL estimators can then be compared with a
float64 ``logsumexp`` over exactly the log-weights they were fed, at any chunking and any scale."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal


class FixedLogWeights:
    """Keeps :class:`~lightning_vae.protocols.SupportsLogWeights` (and ``SupportsLogJoint``) over fixed log-weights.

    ``log_weights(x, s)`` returns the next ``s`` rows of ``weights`` ``(k, B)`` and records ``s``; ``encode`` and
    ``log_joint`` exist only so metrics that ask for :class:`~lightning_vae.protocols.SupportsLogJoint` accept it.
    """

    def __init__(self, weights: Tensor) -> None:
        self.weights = weights
        self.used = 0
        self.passes: list[int] = []

    def log_weights(self, x: Tensor, n_samples: int) -> Tensor:
        rows = self.weights[self.used : self.used + n_samples]
        assert rows.shape[0] == n_samples, "asked for more samples than were given"
        self.used += n_samples
        self.passes.append(n_samples)
        return rows

    def encode(self, x: Tensor) -> Distribution:  # pragma: no cover - log_weights is preferred
        return Independent(Normal(torch.zeros(len(x), 1), torch.ones(len(x), 1)), 1)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:  # pragma: no cover - log_weights is preferred
        return torch.zeros(z.shape[:2])


def reference_log_mean_exp(weights: Tensor) -> Tensor:
    """``logsumexp_i w_i - log k`` over the first axis, in float64."""
    w = weights.double()
    return torch.logsumexp(w, dim=0) - torch.log(torch.tensor(float(w.shape[0]), dtype=torch.float64))
