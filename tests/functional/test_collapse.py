"""Collapse diagnostics (functional/collapse.py) against independent NumPy/SciPy references and known closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp
from torch.distributions import Independent, Normal

from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.functional.collapse import (
    active_units,
    count_active,
    count_collapsed,
    kl_to_standard_normal,
    merge_moments,
    mutual_information,
    posterior_mean_variance,
    sampled_means,
)


# ---------------------------------------------------------------------------------------------- KL, active units
def test_kl_to_standard_normal_matches_torch_distributions():
    mean, var = torch.randn(6, 5), torch.rand(6, 5) + 0.05
    expected = torch.distributions.kl_divergence(Normal(mean, var.sqrt()), Normal(0.0, 1.0))
    torch.testing.assert_close(kl_to_standard_normal(mean, var), expected, rtol=1e-5, atol=1e-6)


def test_count_collapsed_counts_dims_below_threshold():
    kl = torch.tensor([0.0, 0.009, 0.011, 3.0, 0.5])
    assert int(count_collapsed(kl)) == 2
    assert int(count_collapsed(kl, threshold=1.0)) == 4


def test_active_units_match_numpy_variance():
    rng = np.random.default_rng(0)
    scales = np.array([0.0, 0.05, 0.09, 0.2, 1.0, 3.0])  # variances 0, .0025, .0081, .04, 1, 9
    means = rng.normal(size=(400, 6)) * scales + rng.normal(size=6)
    reference = np.var(means, axis=0, ddof=1)
    got = posterior_mean_variance(torch.from_numpy(means))
    np.testing.assert_allclose(got.numpy(), reference, rtol=1e-10, atol=1e-12)
    assert int(active_units(torch.from_numpy(means))) == int((reference > 0.01).sum()) == 3


def test_merge_moments_is_exact_for_any_split_and_stable():
    rng = np.random.default_rng(1)
    # A large offset and a small spread: the naive sum-of-squares formula loses every digit here in float32.
    values = 1e6 + 1e-2 * rng.normal(size=(1000, 3))
    reference = np.var(values, axis=0, ddof=1)
    x = torch.from_numpy(values)
    for sizes in ([1000], [1, 999], [300, 300, 399, 1], [7] * 142 + [6]):
        parts = torch.split(x, sizes)
        counts = torch.tensor([float(p.shape[0]) for p in parts], dtype=torch.float64)
        means = torch.stack([p.mean(0) for p in parts])
        m2s = torch.stack([(p - p.mean(0)).pow(2).sum(0) for p in parts])
        n, mean, m2 = merge_moments(counts, means, m2s)
        assert int(n) == 1000
        np.testing.assert_allclose(mean.numpy(), values.mean(0), rtol=1e-14)
        np.testing.assert_allclose((m2 / (n - 1)).numpy(), reference, rtol=1e-8)


def test_sampled_means_and_their_noise_match_numpy_and_remove_the_monte_carlo_spread():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(20000, 3)) * np.sqrt([0.0, 0.004, 1.0])  # Var_x E_q[z] = 0, 0.004, 1
    samples = mu + rng.normal(size=(8, 20000, 3))  # k = 8 draws of N(mu, 1) per example
    means, noise = sampled_means(torch.from_numpy(samples))
    np.testing.assert_allclose(means.numpy(), samples.mean(0), rtol=1e-12)
    np.testing.assert_allclose(noise.numpy(), samples.var(0, ddof=1) / 8, rtol=1e-12)
    corrected = posterior_mean_variance(means, noise).numpy()
    np.testing.assert_allclose(corrected, np.var(samples.mean(0), axis=0, ddof=1) - noise.numpy().mean(0), rtol=1e-10)
    np.testing.assert_allclose(corrected, [0.0, 0.004, 1.0], atol=0.004, rtol=0.1)  # the spread of 1/8 is gone
    assert int(active_units(means, noise=noise)) == 1 and int(active_units(means)) == 3  # uncorrected: all active
    assert int(count_active(torch.tensor([0.02, 0.01, -0.1]))) == 1
    with pytest.raises(ValueError, match=r"`samples` of shape \(k, B, D\) with k >= 2, got shape \(1, 4, 2\)"):
        sampled_means(torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match=r"`noise` of the means' shape \(20000, 3\), got \(3,\)"):
        posterior_mean_variance(means, noise[0])


# ---------------------------------------------------------------------------------------------- mutual information
def _mi_reference(loc: np.ndarray, var: np.ndarray, z: np.ndarray, entropy: str) -> float:
    """He et al.'s estimator written with SciPy: log q(z_i | x_j) for every pair, then logsumexp over j."""
    b = loc.shape[0]
    log_q = np.stack([stats.norm.logpdf(z[i], loc, np.sqrt(var)).sum(-1) for i in range(b)])  # [i, j]
    if entropy == "exact":
        neg_h = -(0.5 * np.log(2 * np.pi * np.e * var)).sum(-1)
    else:
        neg_h = np.diag(log_q)
    return float(neg_h.mean() - (logsumexp(log_q, axis=1) - np.log(b)).mean())


@pytest.mark.parametrize("entropy", ["sampled", "exact"])
def test_mutual_information_matches_scipy_reference(entropy):
    loc, log_var = torch.randn(40, 3, dtype=torch.float64), 0.5 * torch.randn(40, 3, dtype=torch.float64)
    q = Independent(Normal(loc, torch.exp(0.5 * log_var)), 1)
    z = q.sample()
    got = mutual_information(q, z, entropy=entropy)
    expected = _mi_reference(loc.numpy(), torch.exp(log_var).numpy(), z.numpy(), entropy)
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_mutual_information_is_at_most_log_batch_and_zero_when_collapsed():
    for _ in range(5):
        q = DiagonalGaussian(3.0 * torch.randn(32, 4), torch.randn(32, 4))
        assert mutual_information(q).item() <= math.log(32) + 1e-6
    same = DiagonalGaussian(torch.full((32, 4), 0.7), torch.full((32, 4), -1.0))
    assert mutual_information(same).item() == pytest.approx(0.0, abs=1e-9)


def test_mutual_information_recovers_the_gaussian_channel_capacity():
    # x ~ N(0, 1), q(z|x) = N(x, s^2): I(x; z) = 0.5 log(1 + 1/s^2); the in-batch estimate is close for a large batch.
    s = 0.5
    x = torch.randn(3000, 1, dtype=torch.float64)
    q = Independent(Normal(x, torch.full_like(x, s)), 1)
    expected = 0.5 * math.log(1 + 1 / s**2)
    assert mutual_information(q).item() == pytest.approx(expected, abs=0.05)


def test_mutual_information_rejects_wrong_shapes():
    q = DiagonalGaussian(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="one sample per example"):
        mutual_information(q, torch.zeros(3, 4, 2))
    with pytest.raises(ValueError, match=r"`entropy` to be one of \('sampled', 'exact'\), got 'mc'"):
        mutual_information(q, entropy="mc")  # type: ignore[arg-type]


def test_mutual_information_in_row_chunks_equals_the_direct_computation():
    # 800 x 800 pairs x 32 dims is above the 2^24-element chunk, so the rows are processed in two parts.
    q = DiagonalGaussian(torch.randn(800, 32), torch.randn(800, 32) - 1.0)
    z = q.sample()
    log_density = q.log_prob(z.unsqueeze(1)).double()
    direct = log_density.diagonal().mean() - (torch.logsumexp(log_density, dim=1) - math.log(800)).mean()
    assert mutual_information(q, z).item() == pytest.approx(direct.item(), rel=1e-9)
