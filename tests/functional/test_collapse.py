"""Collapse diagnostics, IW-NLL and MIG against independent NumPy/SciPy references and known closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp
from torch.distributions import Independent, MultivariateNormal, Normal

from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.functional.collapse import (
    active_units,
    count_collapsed,
    kl_to_standard_normal,
    merge_moments,
    mutual_information,
    posterior_mean_variance,
)
from lightning_vae.functional.disentanglement import discretize, mutual_information_gap
from lightning_vae.functional.nll import iw_log_likelihood, iw_nll


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
    with pytest.raises(ValueError, match="'sampled' or 'exact'"):
        mutual_information(q, entropy="mc")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- importance-weighted NLL
class LinearGaussian(torch.nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I): log p(x) and the ELBO have closed forms."""

    def __init__(self, x_dim: int = 4, z_dim: int = 2, s: float = 0.7, exact_posterior: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.W = torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64)
        self.b = torch.randn(x_dim, generator=g, dtype=torch.float64)
        self.s = s
        self.exact = exact_posterior
        self.calls: list[tuple[int, ...]] = []

    def posterior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        precision = torch.eye(self.W.shape[1], dtype=torch.float64) + self.W.T @ self.W / self.s**2
        cov = torch.linalg.inv(precision)
        loc = (x - self.b) @ self.W @ cov.T / self.s**2
        return loc, cov

    def encode(self, x: torch.Tensor):
        loc, cov = self.posterior_params(x)
        if self.exact:
            return MultivariateNormal(loc, covariance_matrix=cov)
        return Independent(Normal(loc + 0.3, torch.full_like(loc, 0.8)), 1)  # a deliberately wrong diagonal q

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(z.shape))
        mean = z @ self.W.T + self.b
        log_px_z = Independent(Normal(mean, self.s), 1).log_prob(x.expand_as(mean))
        return log_px_z + Independent(Normal(torch.zeros_like(z), 1.0), 1).log_prob(z)

    def true_log_px(self, x: np.ndarray) -> np.ndarray:
        w, b = self.W.numpy(), self.b.numpy()
        return stats.multivariate_normal(b, w @ w.T + self.s**2 * np.eye(len(b))).logpdf(x)

    def elbo(self, x: np.ndarray) -> np.ndarray:
        """The ELBO of the wrong diagonal q in closed form (NumPy)."""
        loc, _ = self.posterior_params(torch.from_numpy(x))
        m, v = loc.numpy() + 0.3, np.full(loc.shape, 0.64)
        w, b, s2 = self.W.numpy(), self.b.numpy(), self.s**2
        resid = x - m @ w.T - b
        trace = (v[:, None, :] * w[None] ** 2).sum((-1, -2))
        e_log_px = -0.5 * x.shape[1] * np.log(2 * np.pi * s2) - ((resid**2).sum(-1) + trace) / (2 * s2)
        e_log_pz = -0.5 * m.shape[1] * np.log(2 * np.pi) - 0.5 * ((m**2).sum(-1) + v.sum(-1))
        entropy = 0.5 * np.log(2 * np.pi * np.e * v).sum(-1)
        return e_log_px + e_log_pz + entropy


def test_iw_with_the_exact_posterior_is_exact_for_any_k_and_chunk():
    model = LinearGaussian()
    x = torch.randn(5, 4, dtype=torch.float64)
    reference = model.true_log_px(x.numpy())
    for k, chunk in ((1, 10000), (7, 3), (50, 12)):
        got = iw_log_likelihood(x, model.encode(x), model.log_joint, n_samples=k, chunk_size=chunk)
        np.testing.assert_allclose(got.numpy(), reference, rtol=1e-5)
    torch.testing.assert_close(
        iw_nll(model, x, n_samples=3), -torch.from_numpy(reference).float(), rtol=1e-5, atol=1e-4
    )


def test_iw_chunks_bound_the_number_of_pairs_decoded_at_once():
    model = LinearGaussian(exact_posterior=False)
    x = torch.randn(4, 4, dtype=torch.float64)
    iw_log_likelihood(x, model.encode(x), model.log_joint, n_samples=30, chunk_size=20)
    assert [s[0] for s in model.calls] == [5] * 6  # 20 // 4 samples of the 4 examples per pass
    assert all(s[0] * s[1] <= 20 for s in model.calls)


def test_iw_k1_equals_the_elbo_in_expectation_and_is_non_increasing_in_k():
    model = LinearGaussian(exact_posterior=False)
    x = torch.randn(3, 4, dtype=torch.float64)
    true_nll, elbo = -model.true_log_px(x.numpy()), model.elbo(x.numpy())
    repeats = 1000
    xs = x.repeat(repeats, 1)  # each copy gives an independent estimate
    q = model.encode(xs)
    means, errs = [], []
    for k in (1, 4, 16, 64):
        est = -iw_log_likelihood(xs, q, model.log_joint, n_samples=k).double().view(repeats, -1)
        means.append(est.mean(0).numpy())
        errs.append(est.std(0).numpy() / math.sqrt(repeats))
    # k = 1: the negative ELBO in expectation (within 4 standard errors).
    assert np.all(np.abs(means[0] + elbo) < 4 * errs[0] + 1e-3)
    # Non-increasing in k and never below the true NLL (up to noise); much tighter than the ELBO at k = 64.
    for a, b, ea, eb in zip(means[:-1], means[1:], errs[:-1], errs[1:]):
        assert np.all(b <= a + 4 * np.hypot(ea, eb))
    assert np.all(means[-1] >= true_nll - 4 * errs[-1])
    assert np.all(means[-1] - true_nll < 0.5 * (-elbo - true_nll))


def test_iw_validates_its_arguments():
    model = LinearGaussian()
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="n_samples"):
        iw_log_likelihood(x, model.encode(x), model.log_joint, n_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        iw_log_likelihood(x, model.encode(x), model.log_joint, chunk_size=0)
    with pytest.raises(ValueError, match="to return shape"):
        iw_log_likelihood(x, model.encode(x), lambda x, z: z.sum(-1).reshape(-1), n_samples=2)
    with pytest.raises(TypeError, match="log_joint"):
        iw_nll(torch.nn.Linear(2, 2), x)


# ---------------------------------------------------------------------------------------------- MIG
def _mig_reference(codes: np.ndarray, factors: np.ndarray, n_bins: int) -> float:
    """MIG as in disentanglement_lib: np.histogram bins, then discrete MI from counts (written independently)."""
    binned = np.stack([np.digitize(c, np.histogram(c, n_bins)[1][:-1]) for c in codes.T])  # (D, N), bins 1..n_bins

    def mi(a, b):
        _, ai = np.unique(a, return_inverse=True)
        _, bi = np.unique(b, return_inverse=True)
        table = np.zeros((ai.max() + 1, bi.max() + 1))
        np.add.at(table, (ai, bi), 1)
        p = table / table.sum()
        pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
        nz = p > 0
        return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())

    gaps = []
    for v in factors.T:
        h = stats.entropy(np.unique(v, return_counts=True)[1])
        scores = sorted((mi(b, v) for b in binned), reverse=True)
        gaps.append((scores[0] - scores[1]) / h)
    return float(np.mean(gaps))


def test_mig_matches_a_numpy_reference():
    rng = np.random.default_rng(4)
    factors = np.stack([rng.integers(0, 3, 600), rng.integers(0, 6, 600), rng.integers(0, 10, 600)], 1)
    codes = np.stack(
        [
            factors[:, 0] + 0.3 * rng.normal(size=600),
            factors[:, 1] + 0.8 * rng.normal(size=600),
            0.5 * factors[:, 1] + factors[:, 2] + rng.normal(size=600),
            rng.normal(size=600),
        ],
        1,
    )
    got = mutual_information_gap(torch.from_numpy(codes), torch.from_numpy(factors), n_bins=20)
    assert got.item() == pytest.approx(_mig_reference(codes, factors, 20), rel=1e-9)


def test_discretize_matches_numpy_digitize():
    codes = np.random.default_rng(5).normal(size=(200, 3))
    expected = np.stack([np.digitize(c, np.histogram(c, 7)[1][:-1]) - 1 for c in codes.T], 1)
    np.testing.assert_array_equal(discretize(torch.from_numpy(codes), 7).numpy(), expected)


def test_mig_properties_and_errors():
    f = torch.cartesian_prod(torch.arange(4), torch.arange(5), torch.arange(3))
    assert mutual_information_gap(f[:, [2, 0, 1]].double(), f, n_bins=5).item() == pytest.approx(1.0, abs=1e-9)
    noise = torch.randn(f.shape[0], 4)
    assert mutual_information_gap(noise, f).item() < 0.1
    with pytest.raises(ValueError, match="at least 2 latent"):
        mutual_information_gap(torch.zeros(10, 1), torch.zeros(10, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="varies"):
        mutual_information_gap(torch.randn(10, 2), torch.zeros(10, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="same N"):
        mutual_information_gap(torch.randn(10, 2), torch.zeros(9, 1, dtype=torch.long))


def test_mutual_information_in_row_chunks_equals_the_direct_computation():
    # 800 x 800 pairs x 32 dims is above the 2^24-element chunk, so the rows are processed in two parts.
    q = DiagonalGaussian(torch.randn(800, 32), torch.randn(800, 32) - 1.0)
    z = q.sample()
    log_density = q.log_prob(z.unsqueeze(1)).double()
    direct = log_density.diagonal().mean() - (torch.logsumexp(log_density, dim=1) - math.log(800)).mean()
    assert mutual_information(q, z).item() == pytest.approx(direct.item(), rel=1e-9)
