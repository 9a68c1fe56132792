"""DiagonalGaussian and as_posterior (distributions/posteriors.py): finite at extreme log-variances, log-densities and
entropy against torch.distributions, the own sample's noise, clamping kept by expand, other outputs refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from lightning_vae.distributions import DiagonalGaussian, as_posterior
from lightning_vae.functional import gaussian_kl


def _normal(loc: torch.Tensor, log_var: torch.Tensor) -> Normal:
    return Normal(loc, torch.exp(0.5 * log_var))


def test_posterior_is_finite_for_extreme_log_variances() -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        loc = torch.tensor([[0.0, 1.0]], dtype=dtype)
        log_var = torch.tensor([[-1e4, 1e4]], dtype=dtype)
        q = DiagonalGaussian(loc, log_var)
        assert q.log_var.dtype == torch.float32
        assert torch.isfinite(q.rsample()).all()
        assert torch.isfinite(gaussian_kl(q.loc, q.log_var)).all()


def test_as_posterior_rejects_other_outputs() -> None:
    with pytest.raises(TypeError, match=r"tuple `\(loc, log_var\)`"):
        as_posterior(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="same shape"):
        as_posterior((torch.zeros(2, 3), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="event shape"):
        as_posterior(Normal(torch.zeros(2, 3), torch.ones(2, 3)))


def test_expand_keeps_the_clamped_log_variance() -> None:
    """The soft clamp is applied once: expanding must not move log-variances near the bounds again."""
    q = DiagonalGaussian(torch.randn(4, 3), torch.tensor([-29.0, 0.0, 19.5]).expand(4, 3))
    expanded = q.expand(torch.Size([2, 4]))
    assert expanded.batch_shape == (2, 4)
    assert torch.equal(expanded.log_var, q.log_var.expand(2, 4, 3))
    assert torch.equal(expanded.base_dist.scale, q.base_dist.scale.expand(2, 4, 3))


def test_log_prob_of_the_own_sample_uses_its_noise() -> None:
    """At the variance floor next to a large mean, log q of the sample comes from ε, not from the rounded z."""
    loc, log_var = torch.full((2, 3), 1e3), torch.full((2, 3), -40.0)
    q = DiagonalGaussian(loc, log_var)
    torch.manual_seed(3)
    z = q.rsample((5,))
    torch.manual_seed(3)
    eps = torch.randn(5, 2, 3)
    expected = -0.5 * (eps.double().square() + q.log_var.double() + math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(q.log_prob(z).double(), expected, rtol=0, atol=1e-5)
    # z cannot resolve σ ≈ 3e-7 next to 1e3: recomputed from z, the standardised distance is mostly 0 or ±200.
    recomputed = q.log_prob(z.clone())
    assert not torch.allclose(recomputed.double(), expected, atol=0.1)
    # sample() keeps its noise too; a second draw replaces the kept one.
    s = q.sample((4,))
    assert torch.isfinite(q.log_prob(s)).all() and not s.requires_grad
    torch.testing.assert_close(q.log_prob(z), recomputed)


def test_posterior_log_prob_and_entropy_match_torch() -> None:
    loc, log_var = torch.randn(6, 4), torch.randn(6, 4)
    q = DiagonalGaussian(loc, log_var)
    reference = Independent(_normal(q.loc, q.log_var), 1)
    z = q.rsample((3,))
    torch.testing.assert_close(q.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(q.log_prob(z.clone()), reference.log_prob(z))
    torch.testing.assert_close(q.entropy(), reference.entropy())
