"""Importance-weighted log-likelihood (functional/nll.py) against closed forms of a linear-Gaussian model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from support.log_weights import FixedLogWeights, reference_log_mean_exp
from torch.distributions import Independent, MultivariateNormal, Normal

from lightning_vae.functional.nll import iw_log_likelihood, iw_nll


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
        iw_nll(model, x, n_samples=3), -torch.from_numpy(reference), rtol=1e-5, atol=1e-4
    )  # float64 in, float64 out


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


# ---------------------------------------------------------------- accumulation over many passes
def test_many_passes_at_large_log_weights_lose_nothing():
    """k = 5000 one-sample passes at log-weights near -1e4 (the exact log p(x) of a model whose q is its posterior,
    shifted): a float32 running total drops the passes' increments once they fall below half its spacing."""
    q = Independent(Normal(torch.zeros(1, 3), torch.ones(1, 3)), 1)
    seen: list[torch.Tensor] = []

    def log_joint(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # log p(x, z) = log q(z|x) - 1e4
        value = q.log_prob(z) - 1e4
        seen.append(value - q.log_prob(z))
        return value

    got = iw_log_likelihood(torch.zeros(1, 1), q, log_joint, n_samples=5000, chunk_size=1)
    assert got.dtype == torch.float32
    reference = reference_log_mean_exp(torch.cat(seen))  # float64, over the very log-weights it was fed
    assert abs(got.double() - reference).item() <= 1e-3  # float32's spacing at 1e4 is 9.8e-4
    assert abs(got.item() + 1e4) <= 2e-3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 400),
    batch=st.integers(1, 4),
    chunk=st.integers(1, 900),
    centre=st.floats(-1e5, 1e3),
    spread=st.floats(0.0, 50.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_iw_nll_equals_a_float64_logsumexp_at_any_chunking_and_scale(k, batch, chunk, centre, spread, seed):
    generator = torch.Generator().manual_seed(seed)
    weights = (centre + spread * torch.randn(k, batch, generator=generator, dtype=torch.float64)).float()
    model = FixedLogWeights(weights)
    got = iw_nll(model, torch.zeros(batch, 1), n_samples=k, chunk_size=chunk)
    assert model.used == k and max(model.passes) <= max(1, chunk // batch)
    reference = -reference_log_mean_exp(weights)
    # Only the float32 result's own rounding: half a spacing of the value, plus the log-weights' float64 sums.
    tolerance = reference.abs() * 2.0**-24 + 1e-9 * (1 + reference.abs())
    assert torch.all((got.double() - reference).abs() <= tolerance), (got, reference)
