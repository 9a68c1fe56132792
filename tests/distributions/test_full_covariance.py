"""FullCovarianceGaussian and its closed-form KL (distributions/full_covariance.py) against torch.distributions in
float64; the KL in kl_terms and the objective; finite at extreme log-variances; arguments refused."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from lightning_vae.distributions import (
    BernoulliLikelihood,
    DiagonalGaussian,
    FullCovarianceGaussian,
    LearnableGaussianPrior,
    StandardNormal,
    full_covariance_kl,
)
from lightning_vae.distributions.full_covariance import n_lower
from lightning_vae.functional import gaussian_kl
from lightning_vae.objective import elbo_groups, kl_terms


def _params(
    batch: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, dim, generator=g, dtype=dtype)
    log_var = 0.5 * torch.randn(batch, dim, generator=g, dtype=dtype)
    lower = 0.7 * torch.randn(batch, n_lower(dim), generator=g, dtype=dtype)
    return loc, log_var, lower


def _reference(q: FullCovarianceGaussian) -> MultivariateNormal:
    return MultivariateNormal(q.loc, scale_tril=q.scale_tril)


def test_scale_tril_places_the_entries_row_by_row() -> None:
    q = FullCovarianceGaussian(torch.zeros(3), torch.log(torch.tensor([1.0, 4.0, 9.0])), torch.tensor([5.0, 6.0, 7.0]))
    expected = torch.tensor([[1.0, 0.0, 0.0], [5.0, 2.0, 0.0], [6.0, 7.0, 3.0]])
    torch.testing.assert_close(q.scale_tril, expected)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_log_prob_entropy_and_moments_match_multivariate_normal(dim: int) -> None:
    q = FullCovarianceGaussian(*_params(4, dim))
    ref = _reference(q)
    assert q.batch_shape == (4,) and q.event_shape == (dim,) and q.loc.dtype == torch.float64
    values = torch.randn(7, 4, dim, dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(values), ref.log_prob(values), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q.entropy(), ref.entropy(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q.covariance_matrix, ref.covariance_matrix)
    torch.testing.assert_close(q.variance, ref.variance)
    torch.testing.assert_close(q.mean, ref.mean)


def test_own_sample_log_prob_from_the_noise_matches_the_solved_one() -> None:
    q = FullCovarianceGaussian(*_params(3, 4))
    z = q.rsample((6,))
    assert z.shape == (6, 3, 4)
    torch.testing.assert_close(q.log_prob(z), _reference(q).log_prob(z.clone()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_samples_and_covariance_keep_float32_under_autocast(dtype: torch.dtype) -> None:
    """Under autocast (as in mixed-precision training) ``z = loc + L ε`` is still the float32 product: a bfloat16
    one moved z by 0.04 and the log-density at z, recomputed, by 0.2 nats."""
    loc, log_var, lower = _params(64, 6, seed=3, dtype=torch.float32)
    q = FullCovarianceGaussian(5.0 * loc, log_var, 3.0 * lower)
    with torch.autocast("cpu", dtype=dtype):
        z = q.rsample((8,))
        covariance = q.covariance_matrix
    assert z.dtype == torch.float32 and covariance.dtype == torch.float32
    eps = q._last_sample[1].double()
    tril = q.scale_tril.double()
    expected = q.loc.double() + (tril @ eps.unsqueeze(-1)).squeeze(-1)  # float64 reference from the same noise
    torch.testing.assert_close(z.double(), expected, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(covariance.double(), tril @ tril.transpose(-1, -2), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.clone()), atol=1e-3, rtol=0)  # from ε vs solved


def test_samples_have_the_covariance() -> None:
    torch.manual_seed(0)
    q = FullCovarianceGaussian(*_params(1, 3))
    z = q.sample((200_000,))[:, 0]
    empirical = torch.cov(z.T)
    torch.testing.assert_close(empirical, q.covariance_matrix[0], rtol=0.03, atol=0.03)
    torch.testing.assert_close(z.mean(0), q.loc[0], rtol=0.0, atol=0.03)


def test_zero_lower_entries_give_the_diagonal_gaussian() -> None:
    loc, log_var, lower = _params(5, 3, dtype=torch.float32)
    q = FullCovarianceGaussian(loc, log_var, torch.zeros_like(lower))
    d = DiagonalGaussian(loc, log_var)
    values = torch.randn(2, 5, 3)
    torch.testing.assert_close(q.log_prob(values), d.log_prob(values))
    torch.testing.assert_close(full_covariance_kl(q), gaussian_kl(loc, d.log_var).sum(-1))


@pytest.mark.parametrize("prior", ["standard", "diagonal"])
def test_closed_form_kl_matches_torch_kl_divergence(prior: str) -> None:
    q = FullCovarianceGaussian(*_params(6, 4))
    if prior == "standard":
        loc_p, log_var_p = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
        kl = full_covariance_kl(q)
    else:
        loc_p, log_var_p = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
        kl = full_covariance_kl(q, loc_p, log_var_p)
    p = MultivariateNormal(loc_p, covariance_matrix=torch.diag(log_var_p.exp()))
    torch.testing.assert_close(kl, kl_divergence(_reference(q), p), rtol=1e-10, atol=1e-10)
    # Registered with torch.distributions for the package's diagonal Gaussian.
    registered = kl_divergence(q, DiagonalGaussian(loc_p, log_var_p))
    torch.testing.assert_close(registered, kl, rtol=1e-5, atol=1e-5)


def test_kl_terms_use_the_closed_form_without_an_elementwise_kl() -> None:
    q32 = FullCovarianceGaussian(*_params(5, 3, seed=1, dtype=torch.float32))
    q64 = FullCovarianceGaussian(*_params(5, 3, seed=1))
    z = q32.rsample((1,))
    learnable = LearnableGaussianPrior(3)
    with torch.no_grad():
        learnable.loc.copy_(torch.tensor([0.5, -1.0, 2.0]))
        learnable.log_var.copy_(torch.tensor([0.3, -0.2, 1.0]))
    for prior in (StandardNormal(3), learnable()):
        kl, elementwise = kl_terms(q32, prior, z)
        assert elementwise is None and kl.shape == (5,) and kl.dtype == torch.float32
        ref_prior = MultivariateNormal(prior.loc.double(), covariance_matrix=torch.diag(prior.log_var.double().exp()))
        torch.testing.assert_close(kl.double(), kl_divergence(_reference(q64), ref_prior), rtol=1e-5, atol=1e-5)


def test_objective_with_a_full_covariance_posterior() -> None:
    torch.manual_seed(0)
    q = FullCovarianceGaussian(*_params(4, 3, dtype=torch.float32))
    z = q.rsample((1,))
    x = torch.rand(4, 2).round()
    params = torch.zeros(1, 4, 2)
    terms = elbo_groups(x, {"z": q}, {"z": z}, params, BernoulliLikelihood(), {"z": StandardNormal(3)})
    torch.testing.assert_close(terms.kl, full_covariance_kl(q).mean())
    assert terms.kl_per_dim is None and terms.kl_elementwise is None
    with pytest.raises(ValueError, match="factorises"):
        elbo_groups(x, {"z": q}, {"z": z}, params, BernoulliLikelihood(), {"z": StandardNormal(3)}, free_bits=0.5)
    total = elbo_groups(x, {"z": q}, {"z": z}, params, BernoulliLikelihood(), {"z": StandardNormal(3)},
                        free_bits=0.5, free_bits_mode="total")  # fmt: skip
    assert torch.isfinite(total.loss)
    zk = q.rsample((5,))  # k > 1: the IWAE bound uses log q of the samples
    iwae = elbo_groups(x, {"z": q}, {"z": zk}, torch.zeros(5, 4, 2), BernoulliLikelihood(), {"z": StandardNormal(3)})
    assert iwae.iwae is not None and torch.isfinite(iwae.loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_at_extreme_log_variances(dtype: torch.dtype) -> None:
    loc = torch.tensor([[0.0, 1.0, -2.0]], dtype=dtype)
    log_var = torch.tensor([[-1e4, 1e4, 0.0]], dtype=dtype)
    lower = torch.tensor([[3.0, -1.0, 2.0]], dtype=dtype, requires_grad=True)
    q = FullCovarianceGaussian(loc, log_var, lower)
    assert q.loc.dtype == torch.float32
    z = q.rsample((3,))
    values = [z, q.log_prob(z), q.log_prob(z.clone()), q.entropy(), full_covariance_kl(q)]
    assert all(torch.isfinite(v).all() for v in values)
    full_covariance_kl(q).sum().backward()
    assert lower.grad is not None and torch.isfinite(lower.grad).all()


def test_from_scale_tril_and_expand() -> None:
    ref = FullCovarianceGaussian(*_params(2, 3))
    q = FullCovarianceGaussian.from_scale_tril(ref.loc, ref.scale_tril)
    torch.testing.assert_close(q.scale_tril, ref.scale_tril)
    expanded = q.expand(torch.Size([5, 2]))
    assert expanded.batch_shape == (5, 2)
    values = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(expanded.log_prob(values), q.log_prob(values))


def test_wrong_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="`lower` to be a tensor"):
        FullCovarianceGaussian(torch.zeros(2, 3), torch.zeros(2, 3), [0.0, 0.0, 0.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one shape"):
        FullCovarianceGaussian(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(2, 3\).*D\(D-1\)/2"):
        FullCovarianceGaussian(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="one shape"):
        FullCovarianceGaussian(torch.zeros(()), torch.zeros(()), torch.zeros(()))


def test_diagonal_prior_as_independent_normal_uses_the_closed_form() -> None:
    q = FullCovarianceGaussian(*_params(3, 2, dtype=torch.float32))
    prior = Independent(Normal(torch.ones(2), 2.0 * torch.ones(2)), 1)
    kl, elementwise = kl_terms(q, prior, q.rsample((1,)))
    expected = full_covariance_kl(q, torch.ones(2), torch.log(torch.full((2,), 4.0)))
    assert elementwise is None and kl.shape == (3,)
    torch.testing.assert_close(kl, expected)
