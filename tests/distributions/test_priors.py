"""Priors (distributions/priors.py) against torch.distributions and hand sums: mixture and VampPrior densities,
sampling, clamping, argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from lightning_vae.distributions import (
    DiagonalGaussian,
    DiagonalGaussianMixture,
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
)
from lightning_vae.nets import MLPEncoder


def _normal(loc: torch.Tensor, log_var: torch.Tensor) -> Normal:
    return Normal(loc, torch.exp(0.5 * log_var))


def test_mixture_prior_log_prob_matches_hand_sum() -> None:
    prior = MixtureOfGaussiansPrior(2, n_components=3)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.1, -0.3, 0.7]))
    z = torch.randn(10, 2)
    w = torch.softmax(prior.logits.detach(), 0)
    comps = [
        Normal(prior.locs[k].detach(), torch.exp(0.5 * prior.log_vars[k].detach())).log_prob(z).sum(-1)
        for k in range(3)
    ]
    expected = torch.logsumexp(torch.stack([c + torch.log(w[k]) for k, c in enumerate(comps)]), 0)
    torch.testing.assert_close(prior().log_prob(z), expected)


def test_vamp_prior_is_the_mean_of_pseudo_posteriors() -> None:
    enc = MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(8,))
    prior = VampPrior((1, 4, 4), n_components=6)
    z = torch.randn(7, 3)
    loc, log_var = enc(prior.pseudo_inputs)
    per_component = torch.stack([_normal(loc[k], log_var[k]).log_prob(z).sum(-1) for k in range(6)])
    expected = torch.logsumexp(per_component, 0) - math.log(6)
    torch.testing.assert_close(prior(enc).log_prob(z), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs the encoder"):
        prior()


def test_standard_normal_prior_needs_its_size_before_sampling() -> None:
    with pytest.raises(ValueError, match="latent size"):
        StandardNormalPrior()()


def test_diagonal_gaussian_mixture_samples_and_validates_shapes() -> None:
    p = DiagonalGaussianMixture(torch.tensor([0.0, 1.0]), torch.tensor([[-5.0, 0.0], [5.0, 0.0]]), torch.zeros(2, 2))
    s = p.sample((1000,))
    assert s.shape == (1000, 2) and p.event_shape == (2,) and p.batch_shape == ()
    share_right = float((s[:, 0] > 0).float().mean())
    assert abs(share_right - float(torch.sigmoid(torch.tensor(1.0)))) < 0.05
    with pytest.raises(ValueError, match=r"\(K,\).*\(K, D\)"):
        DiagonalGaussianMixture(torch.zeros(3), torch.zeros(2, 2), torch.zeros(2, 2))


def test_mixture_prior_clamps_component_log_variances_like_the_posterior() -> None:
    prior = MixtureOfGaussiansPrior(2, n_components=2)
    with torch.no_grad():
        prior.log_vars.copy_(torch.tensor([[-500.0, 0.0], [300.0, 1.0]]))
    p = prior()
    expected = DiagonalGaussian(torch.zeros(2, 2), prior.log_vars.detach()).log_var
    torch.testing.assert_close(p.log_vars, expected)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: StandardNormalPrior(0), ValueError, r"`latent_dim` to be an int >= 1, got 0"),
        (lambda: StandardNormalPrior(2.0), TypeError, r"`latent_dim` to be an int, got 2.0 \(float\)"),
        (lambda: LearnableGaussianPrior(-1), ValueError, r"`latent_dim` to be an int >= 1, got -1"),
        (lambda: MixtureOfGaussiansPrior(2, n_components=0), ValueError, r"`n_components` to be an int >= 1"),
        (lambda: VampPrior((1, 4, 4), n_components="5"), TypeError, r"`n_components` to be an int, got '5'"),
        (lambda: VampPrior(784), TypeError, r"`input_shape` to be a sequence of ints, got 784"),
        (lambda: VampPrior((1, 0, 4)), ValueError, r"`input_shape` to be a non-empty sequence of sizes >= 1"),
        (lambda: VampPrior((1, 4, 4), latent_dim=0), ValueError, r"`latent_dim` to be an int >= 1, got 0"),
    ],
)
def test_prior_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()
