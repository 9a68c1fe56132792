"""ImportanceWeightedNLL over batches, in nats and bits per dimension, against SciPy on an exact linear-Gaussian
model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from support.log_weights import FixedLogWeights, reference_log_mean_exp
from torch.distributions import Independent, MultivariateNormal, Normal

from lightning_vae.metrics import (
    ImportanceWeightedNLL,
)


class _ExactLinearGaussian(torch.nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz, I), with the exact (full-covariance) posterior as q."""

    def __init__(self) -> None:
        super().__init__()
        self.W = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.2, 0.1]], dtype=torch.float64)

    def encode(self, x):
        cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + self.W.T @ self.W)
        return MultivariateNormal(x @ self.W @ cov.T, covariance_matrix=cov)

    def log_joint(self, x, z):
        return Independent(Normal(z @ self.W.T, 1.0), 1).log_prob(x) + Independent(Normal(0.0 * z, 1.0), 1).log_prob(z)


def test_importance_weighted_nll_in_nats_and_bits_matches_scipy():
    model = _ExactLinearGaussian()
    xs = [torch.randn(n, 3, dtype=torch.float64) for n in (4, 3)]
    nats, bits = (
        ImportanceWeightedNLL(n_samples=9, chunk_size=5),
        ImportanceWeightedNLL(n_samples=2, unit="bits_per_dim"),
    )
    for x in xs:
        nats.update(model, x)
        bits.update(model, x)
    w = model.W.numpy()
    reference = -stats.multivariate_normal(np.zeros(3), w @ w.T + np.eye(3)).logpdf(torch.cat(xs).numpy()).mean()
    assert nats.compute().item() == pytest.approx(reference, rel=1e-5)
    assert bits.compute().item() == pytest.approx(reference / (3 * math.log(2)), rel=1e-5)


def test_importance_weighted_nll_over_many_passes_at_large_log_weights():
    """5000 one-sample passes at log-weights near -1e4: the metric equals a float64 logsumexp over them."""
    weights = (-1e4 + 0.5 * torch.randn(5000, 2, dtype=torch.float64)).float()
    metric = ImportanceWeightedNLL(n_samples=5000, chunk_size=1)
    metric.update(FixedLogWeights(weights), torch.zeros(2, 1))
    reference = -reference_log_mean_exp(weights).mean()
    assert metric.compute().item() == pytest.approx(reference.item(), abs=1e-3)  # float32 spacing at 1e4: 9.8e-4
