"""GaussianLikelihood and LaplaceLikelihood (distributions/likelihoods/scaled.py) against torch.distributions, the
soft floor of a learned scale, means and sample moments, and their argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Laplace, Normal

from lightning_vae.distributions import GaussianLikelihood, LaplaceLikelihood

B, SHAPE = 5, (2, 3, 4)


@pytest.mark.parametrize("mode", ["fixed", "global", "per_dim"])
def test_gaussian_matches_torch(mode: str) -> None:
    x, mu = torch.randn(B, *SHAPE), torch.randn(B, *SHAPE)
    lik = GaussianLikelihood(mode, sigma=0.7, data_shape=SHAPE)
    if mode == "per_dim":
        with torch.no_grad():
            lik.log_scale.copy_(0.3 * torch.randn(SHAPE))
    sigma = lik.sigma.detach()
    if mode == "fixed":
        torch.testing.assert_close(sigma, torch.tensor(0.7))
    expected = Normal(mu, sigma.expand_as(mu)).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(x, mu), expected)
    assert (mode == "fixed") == (len(list(lik.parameters())) == 0)


def test_gaussian_per_dim_needs_shape() -> None:
    with pytest.raises(ValueError, match="data_shape"):
        GaussianLikelihood("per_dim")


@pytest.mark.parametrize("mode", ["fixed", "global"])
def test_laplace_matches_torch(mode: str) -> None:
    x, loc = torch.randn(B, *SHAPE), torch.randn(B, *SHAPE)
    lik = LaplaceLikelihood(mode, scale=0.4)
    if mode == "fixed":
        torch.testing.assert_close(lik.scale, torch.tensor(0.4))
    expected = Laplace(loc, lik.scale.detach().expand_as(loc)).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(x, loc), expected)


def test_laplace_per_dim_has_one_learned_scale_per_element() -> None:
    lik = LaplaceLikelihood("per_dim", scale=0.5, data_shape=SHAPE)
    assert lik.log_scale.shape == SHAPE and lik.log_scale.requires_grad
    with torch.no_grad():
        lik.log_scale.copy_(0.4 * torch.randn(SHAPE))
    x, loc = torch.randn(B, *SHAPE), torch.randn(B, *SHAPE)
    expected = Laplace(loc, lik.scale.detach().expand_as(loc)).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(x, loc), expected)
    lik.log_prob(x, loc).sum().backward()
    assert lik.log_scale.grad is not None and bool((lik.log_scale.grad != 0).all())


@pytest.mark.parametrize("make", [lambda: GaussianLikelihood("global"), lambda: LaplaceLikelihood("global")])
def test_a_learned_scale_has_a_soft_floor_at_e_to_the_minus_7(make) -> None:
    lik = make()
    floor = math.exp(-7.0)
    for raw in (-1e4, -50.0, -7.0, -3.0, 0.0, 5.0):
        with torch.no_grad():
            lik.log_scale.fill_(raw)
        scale = float(lik.scale.detach())
        assert scale > floor or (raw <= -50.0 and scale == pytest.approx(floor, rel=1e-6))
        if raw >= 0.0:  # far above the floor the learned value is the scale itself (within e^-(raw + 7))
            assert scale == pytest.approx(math.exp(raw), rel=math.exp(-(raw + 7)) * 1.01)
    with torch.no_grad():
        lik.log_scale.fill_(-1e4)
    x = torch.tensor([[0.0]])
    assert torch.isfinite(lik.log_prob(x, x)).all()  # bounded: at most -log(floor) - const per element


def test_means_are_the_decoder_output_and_samples_have_its_moments() -> None:
    torch.manual_seed(0)
    params = torch.tensor([[-1.0, 0.0, 2.0]]).expand(50_000, 3)
    gaussian, laplace = GaussianLikelihood(sigma=0.5), LaplaceLikelihood(scale=0.5)
    for lik in (gaussian, laplace):
        torch.testing.assert_close(lik.mean(params), params, rtol=0, atol=0)
    g, lp = gaussian.sample(params), laplace.sample(params)
    # means within 5 standard errors; variances σ² = 0.25 and 2 b² = 0.5
    torch.testing.assert_close(g.mean(0), params[0], rtol=0, atol=5 * 0.5 / 50_000**0.5)
    torch.testing.assert_close(lp.mean(0), params[0], rtol=0, atol=5 * 0.5**0.5 / 50_000**0.5)
    torch.testing.assert_close(g.var(0), torch.full((3,), 0.25), rtol=0.03, atol=0)
    torch.testing.assert_close(lp.var(0), torch.full((3,), 0.5), rtol=0.05, atol=0)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: GaussianLikelihood("learned"), ValueError, r"`sigma_mode` to be one of \('fixed', 'global'"),
        (lambda: GaussianLikelihood(None), TypeError, r"`sigma_mode` to be one of .*got None"),
        (lambda: GaussianLikelihood(sigma=0.0), ValueError, r"`sigma` to be a finite float > 0, got 0.0"),
        (lambda: GaussianLikelihood(sigma=float("nan")), ValueError, r"`sigma` to be a finite float, got nan"),
        (lambda: GaussianLikelihood(sigma="1"), TypeError, r"`sigma` to be a finite float, got '1' \(str\)"),
        (lambda: GaussianLikelihood("per_dim", data_shape=(1, 0)), ValueError, r"`data_shape` to be a non-empty"),
        (lambda: LaplaceLikelihood("per_dim"), ValueError, r"per-dimension scale needs `data_shape`"),
        (lambda: LaplaceLikelihood(scale=-1.0), ValueError, r"`scale` to be a finite float > 0, got -1.0"),
        (lambda: LaplaceLikelihood(scale_mode="x"), ValueError, r"`scale_mode` to be one of"),
    ],
)
def test_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()
