"""CategoricalLikelihood and DiscretizedLogisticMixtureLikelihood (distributions/likelihoods/discrete.py) against
torch.distributions and a float64 reference, the bin masses summing to one, means and samples, targets and
arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit
from torch.distributions import AffineTransform, Categorical, SigmoidTransform, TransformedDistribution, Uniform

from lightning_vae.distributions import CategoricalLikelihood, DiscretizedLogisticMixtureLikelihood

B, SHAPE = 5, (2, 3, 4)


def test_categorical_matches_torch() -> None:
    levels = torch.randint(0, 256, (B, *SHAPE))
    x = levels.float() / 255
    logits = torch.randn(B, 256, *SHAPE)
    expected = Categorical(logits=logits.movedim(1, -1)).log_prob(levels).sum((1, 2, 3))
    lik = CategoricalLikelihood()
    torch.testing.assert_close(lik.log_prob(x, logits), expected)
    torch.testing.assert_close(lik.log_prob(levels, logits), expected)  # integer targets too
    samples = torch.randn(3, B, 256, *SHAPE)
    torch.testing.assert_close(
        lik.log_prob(x, samples)[1], Categorical(logits=samples[1].movedim(1, -1)).log_prob(levels).sum((1, 2, 3))
    )


def test_categorical_mean_and_samples_follow_the_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(3, 256, 1, generator=g)
    lik = CategoricalLikelihood()
    probs = np.exp(logits.double().numpy() - logits.double().numpy().max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected = (probs * (np.arange(256) / 255).reshape(1, 256, 1)).sum(1)
    np.testing.assert_allclose(lik.mean(logits).numpy(), expected, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    peaked = torch.full((4000, 256, 1), -30.0)
    peaked[:, 17], peaked[:, 200] = 0.0, np.log(3.0)  # levels 17 and 200 with probabilities 1/4 and 3/4
    samples = lik.sample(peaked)
    assert samples.shape == (4000, 1) and set((samples * 255).round().long().unique().tolist()) == {17, 200}
    assert abs(float((samples > 0.5).float().mean()) - 0.75) < 4 * (0.75 * 0.25 / 4000) ** 0.5


def _logistic_mixture_reference(x: torch.Tensor, params: torch.Tensor, k: int) -> torch.Tensor:
    """Bin masses from the logistic CDF of torch.distributions, in float64, mixed with softmax weights."""
    params = params.double()
    logits, means, log_scales = params.chunk(3, dim=1)
    log_scales = log_scales.clamp(min=-7.0)
    xs = (2 * x.double() - 1).unsqueeze(1)
    logistic = TransformedDistribution(
        Uniform(torch.zeros_like(means), torch.ones_like(means)),
        [SigmoidTransform().inv, AffineTransform(loc=means, scale=torch.exp(log_scales))],
    )
    h = 1.0 / 255
    upper = torch.where(xs > 0.999, torch.ones_like(means), logistic.cdf((xs + h).clamp(-50, 50).expand_as(means)))
    lower = torch.where(xs < -0.999, torch.zeros_like(means), logistic.cdf((xs - h).clamp(-50, 50).expand_as(means)))
    mass = (torch.softmax(logits, dim=1) * (upper - lower)).sum(1)
    return torch.log(mass).sum((1, 2, 3))


def test_discretized_logistic_mixture_matches_reference() -> None:
    k = 3
    x = torch.randint(0, 256, (B, *SHAPE)).float() / 255
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # both edge bins
    params = torch.randn(B, 3 * k, *SHAPE)
    params[:, 2 * k :] = params[:, 2 * k :].clamp(-3, 0)  # scales where the reference's float64 CDF is accurate
    lik = DiscretizedLogisticMixtureLikelihood(n_components=k)
    torch.testing.assert_close(
        lik.log_prob(x, params).double(), _logistic_mixture_reference(x, params, k), rtol=1e-4, atol=1e-3
    )


def test_discretized_logistic_mixture_is_normalised() -> None:
    """Summing the probability of all 256 bins of one element gives 1."""
    lik = DiscretizedLogisticMixtureLikelihood(n_components=2)
    x = (torch.arange(256).float() / 255).view(256, 1)
    params = torch.tensor([0.3, -0.2, 0.1, -0.5, -2.0, -1.5]).view(1, 6, 1).expand(256, 6, 1)
    total = lik.log_prob(x, params).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0), atol=1e-5, rtol=0)


def test_discretized_logistic_mixture_mean_and_samples() -> None:
    lik = DiscretizedLogisticMixtureLikelihood(n_components=2)
    assert lik.param_shape((1, 4, 4)) == (6, 1, 4, 4)
    # weights softmax(0, log 3) = (1/4, 3/4), means -0.5 and 0.5 in [-1, 1]: mean (0.25 * -0.5 + 0.75 * 0.5 + 1) / 2
    params = torch.tensor([0.0, np.log(3.0), -0.5, 0.5, -7.0, -7.0], dtype=torch.float32).view(1, 6, 1)
    torch.testing.assert_close(lik.mean(params), torch.tensor([[(0.25 * -0.5 + 0.75 * 0.5 + 1) / 2]]))
    torch.manual_seed(0)
    n = 20_000
    samples = lik.sample(params.expand(n, 6, 1))
    levels = samples * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # on the grid of 1/255
    # each level as often as its mass under the mixture: logistic CDF differences at the bin edges, in float64
    counts = np.bincount(levels.round().long().flatten().numpy(), minlength=256) / n
    edges = (2 * np.arange(257) - 1) / 255 - 1.0  # bin k is [edges[k], edges[k + 1]] in [-1, 1]
    edges[0], edges[-1] = -np.inf, np.inf
    cdf = sum(w * expit((edges - m) / np.exp(-7.0)) for w, m in ((0.25, -0.5), (0.75, 0.5)))
    mass = np.diff(cdf)
    assert mass[[63, 64, 191, 192]].sum() > 0.9  # the narrowest scale: almost all mass next to the two means
    np.testing.assert_array_less(np.abs(counts - mass), 4 * np.sqrt(mass * (1 - mass) / n) + 1e-4)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.tensor([[0.5001, 0.2]]), "multiples of 1/255"),
        (torch.tensor([[300, 2]]), r"integer targets in \[0, 255\]"),
        (torch.tensor([[-1, 2]]), r"integer targets in \[0, 255\]"),
    ],
)
def test_bad_categorical_targets_are_named(bad: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CategoricalLikelihood().check_target(bad)


def test_targets_on_the_grid_pass() -> None:
    CategoricalLikelihood().check_target(torch.arange(256).float().view(1, 256) / 255)
    CategoricalLikelihood().check_target(torch.tensor([[0, 255]]))
    DiscretizedLogisticMixtureLikelihood().check_target(torch.tensor([[0.0, 0.5, 1.0]]))


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: DiscretizedLogisticMixtureLikelihood(0), ValueError, r"`n_components` to be an int >= 1, got 0"),
        (lambda: DiscretizedLogisticMixtureLikelihood(2.0), TypeError, r"`n_components` to be an int, got 2.0"),
    ],
)
def test_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()
