"""The KL decomposition (functional/kl_decomposition.py) against Chen et al.'s code (rtqichen/beta-tcvae,
``elbo_decomposition.py`` and ``vae_quant.py``) re-implemented in NumPy float64, and the minibatch estimators of
``log q(z)`` against the exact sum over a small set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from support.papers import normal_log_density, vae_quant_matrix, vae_quant_terms

from lightning_vae.functional.kl_decomposition import (
    aggregate_log_density,
    kl_decomposition,
    log_importance_weight_matrix,
    minibatch_kl_decomposition,
    minibatch_log_density,
)


# ------------------------------------------------------------------ the reference code, re-implemented
def _normal_nll(mu, logsigma, sample_mu=None, sample_logsigma=None):
    """``Normal.NLL``: E_{N(sample_mu, sample_sigma^2)}[-log N(mu, sigma^2)]; the entropy without sample params."""
    if sample_mu is None:
        sample_mu, sample_logsigma = mu, logsigma
    nll = (
        np.exp(-2 * logsigma) * (sample_mu - mu) ** 2
        + np.exp(2 * sample_logsigma - 2 * logsigma)
        + 2 * logsigma
        + np.log(2 * np.pi)
    )
    return 0.5 * nll


def _elbo_decomposition_reference(samples, mu, logsigma):
    """``elbo_decomposition.py``: ``estimate_entropies`` (chunks of 10 samples) and the analytical NLL terms.

    samples (S, K); mu, logsigma (N, K). Returns (dependence, information, dimwise_kl, analytical_cond_kl).
    """
    n, k = mu.shape
    qz_samples = samples.T  # (K, S)
    s = qz_samples.shape[1]
    marginal_entropies, joint_entropy = np.zeros(k), 0.0
    for start in range(0, s, 10):
        chunk = qz_samples[:, start : start + 10]  # (K, b)
        logqz_i = normal_log_density(chunk[None], mu[:, :, None], logsigma[:, :, None])  # (N, K, b)
        marginal_entropies += (math.log(n) - logsumexp(logqz_i, axis=0)).sum(1)
        joint_entropy += (math.log(n) - logsumexp(logqz_i.sum(1), axis=0)).sum(0)
    marginal_entropies /= s
    joint_entropy /= s
    nlogqz_condx = _normal_nll(mu, logsigma).mean(0)
    nlogpz = _normal_nll(np.zeros_like(mu), np.zeros_like(logsigma), mu, logsigma).mean(0)
    dependence = -joint_entropy + marginal_entropies.sum()
    information = -nlogqz_condx.sum() + joint_entropy
    dimwise_kl = (-marginal_entropies + nlogpz).sum()
    analytical_cond_kl = (-nlogqz_condx + nlogpz).sum()
    return dependence, information, dimwise_kl, analytical_cond_kl


def _posteriors(n=60, d=3, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, d)) * np.array([1.5, 0.7, 0.05])[:d] + 0.3 * rng.normal(size=(n, 1))  # correlated
    logsigma = rng.normal(size=(n, d)) * 0.2 + np.array([-1.0, -0.5, 0.0])[:d]
    z = mu + np.exp(logsigma) * rng.normal(size=(n, d))
    return z, mu, logsigma


# ------------------------------------------------------------------ exact sums over a set
def test_exact_decomposition_equals_elbo_decomposition_of_the_reference_code():
    z, mu, logsigma = _posteriors(n=73)
    dependence, information, dimwise_kl, cond_kl = _elbo_decomposition_reference(z, mu, logsigma)
    t = torch.from_numpy
    parts = kl_decomposition(t(mu), t(2 * logsigma), t(z))
    assert parts.total_correlation.item() == pytest.approx(dependence, rel=1e-12, abs=1e-12)
    assert parts.mutual_info.item() == pytest.approx(information, rel=1e-12, abs=1e-12)
    assert parts.dimension_kl.item() == pytest.approx(dimwise_kl, rel=1e-12, abs=1e-12)
    assert parts.kl.item() == pytest.approx(cond_kl, rel=1e-12)
    assert parts.dimension_kl_per_dim.sum().item() == pytest.approx(dimwise_kl, rel=1e-12, abs=1e-12)


def test_the_parts_sum_to_the_closed_form_average_kl_whatever_the_samples():
    _, mu, logsigma = _posteriors(n=50, d=3, seed=1)
    loc, log_var = torch.from_numpy(mu), torch.from_numpy(2 * logsigma)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(loc, log_var.mul(0.5).exp()), torch.distributions.Normal(0.0, 1.0)
    )
    for z in (None, torch.randn(17, 3, dtype=torch.float64) * 3):  # samples of q(z), or any points at all
        parts = kl_decomposition(loc, log_var, z, generator=torch.Generator().manual_seed(0))
        total = parts.mutual_info + parts.total_correlation + parts.dimension_kl
        assert total.item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-12)
        assert parts.kl.item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-12)


def test_a_factorised_gaussian_prior_is_used_per_dimension():
    _, mu, logsigma = _posteriors(n=40, d=2, seed=2)
    loc, log_var = torch.from_numpy(mu), torch.from_numpy(2 * logsigma)
    prior_loc, prior_log_var = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, -0.2]).double()
    q = torch.distributions.Normal(loc, log_var.mul(0.5).exp())
    p = torch.distributions.Normal(prior_loc, prior_log_var.mul(0.5).exp())
    parts = kl_decomposition(loc, log_var, loc, prior_loc=prior_loc, prior_log_var=prior_log_var)
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean()
    assert (parts.mutual_info + parts.total_correlation + parts.dimension_kl).item() == pytest.approx(expected.item())
    default = kl_decomposition(loc, log_var, loc)
    assert default.total_correlation.item() == pytest.approx(parts.total_correlation.item(), rel=1e-12)  # no prior


def test_the_sums_are_the_same_in_any_chunking_and_bounded_in_memory():
    z, mu, logsigma = (torch.from_numpy(a) for a in _posteriors(n=41, d=3, seed=3))
    whole = aggregate_log_density(z, mu, 2 * logsigma, chunk_size=10**9)
    for chunk in (1, 3, 7, 2 * 41 * 3 + 1):
        part = aggregate_log_density(z, mu, 2 * logsigma, chunk_size=chunk)
        torch.testing.assert_close(part.joint, whole.joint, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(part.marginals, whole.marginals, rtol=1e-13, atol=1e-13)
    reference = logsumexp(
        normal_log_density(z.numpy()[:, None], mu.numpy()[None], logsigma.numpy()[None]).sum(2), axis=1
    ) - math.log(41)
    np.testing.assert_allclose(whole.joint.numpy(), reference, rtol=1e-13)


def test_float32_inputs_are_computed_in_float32_and_shapes_are_checked():
    z, mu, logsigma = (torch.from_numpy(a).float() for a in _posteriors(n=20, d=2))
    assert kl_decomposition(mu, 2 * logsigma, z).kl.dtype == torch.float32
    with pytest.raises(ValueError, match=r"same shape \(N, D\)"):
        kl_decomposition(mu, logsigma[:, :1])
    with pytest.raises(ValueError, match=r"samples `z` of shape \(M, 2\)"):
        kl_decomposition(mu, logsigma, z[:, :1])
    with pytest.raises(ValueError, match="Expected `chunk_size` to be an int >= 1, got 0"):
        aggregate_log_density(z, mu, logsigma, chunk_size=0)


# ------------------------------------------------------------------ minibatch estimators against vae_quant.py
@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_minibatch_terms_equal_vae_quant(estimator):
    z, mu, logsigma = _posteriors(n=32, d=3, seed=4)
    dataset_size = 5000
    condx, logqz, prodmarginals, logpz = vae_quant_terms(z, mu, logsigma, dataset_size, mss=estimator == "mss")
    t = torch.from_numpy
    parts = minibatch_kl_decomposition(t(z), t(mu), t(2 * logsigma), dataset_size, estimator)
    np.testing.assert_allclose(parts.mutual_info.numpy(), condx - logqz, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parts.total_correlation.numpy(), logqz - prodmarginals, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parts.dimension_kl.numpy(), prodmarginals - logpz, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parts.kl.numpy(), condx - logpz, rtol=1e-12, atol=1e-12)
    # vae_quant's β-TCVAE objective (tcvae, include_mutinfo, lamb = 1 - γ) without log p(x|z)
    beta, gamma = 6.0, 0.7
    objective = -(condx - logqz) - beta * (logqz - prodmarginals) - gamma * (prodmarginals - logpz)
    mine = -(parts.mutual_info + beta * parts.total_correlation + gamma * parts.dimension_kl)
    np.testing.assert_allclose(mine.numpy(), objective, rtol=1e-12)


def test_the_mss_weights_are_vae_quant_s_with_the_diagonal_as_in_the_paper():
    for batch_size, dataset_size in ((2, 10), (3, 7), (8, 1000), (64, 737280)):
        mine = log_importance_weight_matrix(batch_size, dataset_size, dtype=torch.float64).numpy()
        np.testing.assert_allclose(mine, vae_quant_matrix(batch_size, dataset_size, True), rtol=1e-14)
        np.testing.assert_allclose(np.exp(mine).sum(1), 1.0, rtol=1e-12)
    original = np.exp(vae_quant_matrix(8, 1000, as_in_the_paper=False))
    first_column = np.delete(original[:, 0], 6)  # all rows but W[M - 1]: 1/N on the first example, not their own
    assert np.allclose(first_column, 1 / 1000) and not np.allclose(np.diag(original), 1 / 1000)


def _estimates_over_random_batches(z, loc, log_var, batch_size, estimate, n_batches, seed=0):
    """For each example, the sums of exp(log q_hat(z_i)) / q(z_i) (and of its square) over random batches (drawn
    without replacement, in random order) that contain it, and their number; ``estimate(idx)`` gives log q_hat."""
    n = loc.shape[0]
    g = torch.Generator().manual_seed(seed)
    sums, squares, counts = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), torch.zeros(n)
    exact = aggregate_log_density(z, loc, log_var).joint
    for _ in range(n_batches):
        idx = torch.randperm(n, generator=g)[:batch_size]
        ratio = (estimate(idx) - exact[idx]).exp()
        sums.index_add_(0, idx, ratio)
        squares.index_add_(0, idx, ratio.square())
        counts.index_add_(0, idx, torch.ones(batch_size))
    return sums, squares, counts


def test_mss_agrees_with_the_exact_sum_over_the_set_within_its_monte_carlo_error():
    """exp(MSS) is unbiased for q(z_i): its average over random batches equals the exact mixture density (with
    the weights of vae_quant.py as written it is twice that here)."""
    z, mu, logsigma = (torch.from_numpy(a) for a in _posteriors(n=30, d=2, seed=5))
    log_var = 2 * logsigma

    def mss(idx):
        return minibatch_log_density(z[idx], mu[idx], log_var[idx], 30, "mss").joint

    def as_written(idx):
        terms = vae_quant_terms(z[idx].numpy(), mu[idx].numpy(), logsigma[idx].numpy(), 30, True, False)
        return torch.from_numpy(terms[1])

    for estimate, expected in ((mss, 1.0), (as_written, None)):
        sums, squares, counts = _estimates_over_random_batches(z, mu, log_var, 6, estimate, n_batches=4000)
        mean = sums.sum() / counts.sum()
        stderr = 2 * ((squares.sum() / counts.sum() - mean.square()) / counts.sum()).sqrt()  # 2: batch correlation
        if expected is None:
            assert mean.item() > 1.5  # biased
            continue
        assert abs(mean.item() - expected) < 4 * stderr.item(), (mean.item(), stderr.item())
        per_example = sums / counts
        assert per_example.min() > 0.85 and per_example.max() < 1.15  # each example's density, not only on average


def test_mws_agrees_with_its_own_expectation_which_is_not_the_exact_density():
    """MWS's weights sum to 1/N: its average is (q(z_i|x_i) + (B-1) q_other(z_i)) / (N B), computed exactly here
    from the set, and lies between q(z_i) / B and about q(z_i) / N."""
    z, mu, logsigma = (torch.from_numpy(a) for a in _posteriors(n=30, d=2, seed=5))
    log_var = 2 * logsigma
    n, batch = 30, 6
    sums, squares, counts = _estimates_over_random_batches(
        z, mu, log_var, batch, lambda idx: minibatch_log_density(z[idx], mu[idx], log_var[idx], n, "mws").joint, 4000
    )
    total = aggregate_log_density(z, mu, log_var).joint.exp() * n  # sum_n q(z_i | x_n)
    own = torch.distributions.Normal(mu, log_var.mul(0.5).exp()).log_prob(z).sum(1).exp()  # q(z_i | x_i)
    expected_ratio = (own + (batch - 1) * (total - own) / (n - 1)) / (n * batch) / (total / n)
    ratio = sums / counts
    assert torch.allclose(ratio, expected_ratio, rtol=0.1)
    lowest = (batch - 1) / (batch * (n - 1))  # own density 0; 1/N where all posteriors coincide
    assert (expected_ratio <= 1 / batch + 1e-12).all() and (expected_ratio >= lowest - 1e-12).all()
    assert ratio.mean() < 0.2  # far from the exact density: log q(z) low by 1.6 to 3.4 nats here


def test_minibatch_arguments_are_checked():
    z, mu, logsigma = (torch.from_numpy(a) for a in _posteriors(n=8, d=2))
    with pytest.raises(ValueError, match="Expected `estimator` to be one of"):
        minibatch_log_density(z, mu, logsigma, 100, "naive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `dataset_size` to be an int >= 8, got 4"):
        minibatch_log_density(z, mu, logsigma, 4)
    with pytest.raises(ValueError, match="Expected `batch_size` to be an int >= 2, got 1"):
        minibatch_log_density(z[:1], mu[:1], logsigma[:1], 100, "mss")
    with pytest.raises(ValueError, match="posteriors' shape"):
        minibatch_log_density(z[:3], mu, logsigma, 100)
