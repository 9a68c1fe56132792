"""BernoulliLikelihood (distributions/likelihoods/bernoulli.py) against torch.distributions and a float64 reference
with soft targets; its mean and samples."""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Bernoulli

from lightning_vae.distributions import BernoulliLikelihood

B, SHAPE = 5, (2, 3, 4)


def test_bernoulli_matches_torch() -> None:
    x = torch.randint(0, 2, (B, *SHAPE)).float()
    logits = 3 * torch.randn(B, *SHAPE)
    expected = Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(BernoulliLikelihood().log_prob(x, logits), expected)


def test_bernoulli_broadcasts_over_samples() -> None:
    x = torch.randint(0, 2, (B, *SHAPE)).float()
    logits = torch.randn(7, B, *SHAPE)
    out = BernoulliLikelihood().log_prob(x, logits)
    assert out.shape == (7, B)
    torch.testing.assert_close(out[3], Bernoulli(logits=logits[3]).log_prob(x).sum((1, 2, 3)))


def test_soft_targets_give_the_cross_entropy_of_a_float64_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 10, generator=g)  # soft targets in [0, 1]
    logits = 8 * torch.randn(3, B, 10, generator=g)
    xd, ld = x.double().numpy(), logits.double().numpy()
    # -[x log σ(l) + (1 - x) log σ(-l)], with log σ(l) = -log(1 + e^-l)
    log_sig, log_sig_neg = -np.logaddexp(0, -ld), -np.logaddexp(0, ld)
    reference = -(xd * log_sig + (1 - xd) * log_sig_neg).sum(-1)
    lik = BernoulliLikelihood()
    np.testing.assert_allclose(lik.nll(x, logits).numpy(), reference, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lik.log_prob(x, logits), -lik.nll(x, logits), rtol=0, atol=0)
    elementwise = lik.elementwise_log_prob(x, logits)
    assert elementwise.shape == (3, B, 10)
    np.testing.assert_allclose(elementwise.sum(-1).numpy(), -reference, rtol=1e-6, atol=1e-5)


def test_the_mean_is_the_sigmoid_and_samples_follow_it() -> None:
    logits = torch.tensor([-2.0, 0.0, 1.5])
    lik = BernoulliLikelihood()
    np.testing.assert_allclose(lik.mean(logits).numpy(), 1 / (1 + np.exp(-logits.double().numpy())), rtol=1e-6)
    torch.manual_seed(0)
    samples = lik.sample(logits.expand(40_000, 3))
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    # the frequency of ones is σ(l): within 4 standard errors sqrt(p (1 - p) / n)
    p = lik.mean(logits)
    assert bool(((samples.mean(0) - p).abs() <= 4 * (p * (1 - p) / 40_000).sqrt()).all())
    assert lik.mean(torch.zeros(2, 3, dtype=torch.float16)).dtype == torch.float32
