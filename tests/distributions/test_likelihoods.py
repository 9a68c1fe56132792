"""Every log-likelihood against torch.distributions (or a float64 reference), plus target validation."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import (
    AffineTransform,
    Bernoulli,
    Categorical,
    Laplace,
    Normal,
    SigmoidTransform,
    TransformedDistribution,
    Uniform,
)

from lightning_vae.distributions import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    DiscretizedLogisticMixtureLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
)

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


@pytest.mark.parametrize(
    ("lik", "bad", "match"),
    [
        (BernoulliLikelihood(), torch.tensor([[0.0, 2.0]]), r"expects targets in \[0, 1\], got values in \[0, 2\]"),
        (BernoulliLikelihood(), torch.tensor([[0.0, float("nan")]]), "1 NaN or infinite"),
        (GaussianLikelihood(), torch.tensor([[0.0, float("inf")]]), "NaN or infinite"),
        (CategoricalLikelihood(), torch.tensor([[0.5001, 0.2]]), "multiples of 1/255"),
        (CategoricalLikelihood(), torch.tensor([[300, 2]]), r"integer targets in \[0, 255\]"),
        (DiscretizedLogisticMixtureLikelihood(), torch.tensor([[-0.5]]), r"targets in \[0, 1\]"),
    ],
)
def test_bad_targets_are_named(lik, bad: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lik.check_target(bad)


def test_wrong_decoder_shape_is_named() -> None:
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(
        ValueError, match=r"decoder returned a tensor of shape \(4, 784\).*\(batch=4, \*\(1, 28, 28\)\)"
    ):
        BernoulliLikelihood().check_params(x, torch.zeros(4, 784))
    with pytest.raises(ValueError, match=r"categorical likelihood expects \(batch=4, \*\(256, 1, 28, 28\)\)"):
        CategoricalLikelihood().check_params(x, torch.zeros(4, 1, 28, 28))


def test_means_and_samples_live_in_data_space() -> None:
    params = torch.randn(2, 15, 1, 4, 4)
    for lik, p in (
        (BernoulliLikelihood(), torch.randn(2, 1, 4, 4)),
        (CategoricalLikelihood(), torch.randn(2, 256, 1, 4, 4)),
        (DiscretizedLogisticMixtureLikelihood(), params),
    ):
        for value in (lik.mean(p), lik.sample(p)):
            assert value.shape == (2, 1, 4, 4)
            assert 0.0 <= float(value.min()) and float(value.max()) <= 1.0


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
        (lambda: DiscretizedLogisticMixtureLikelihood(0), ValueError, r"`n_components` to be an int >= 1, got 0"),
        (lambda: DiscretizedLogisticMixtureLikelihood(2.0), TypeError, r"`n_components` to be an int, got 2.0"),
    ],
)
def test_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


def test_class_paths_stay_the_public_ones() -> None:
    """Checkpoints name a likelihood by class path: the package path, whichever module defines the class."""
    from lightning_vae.building import describe, resolve_class
    from lightning_vae.distributions import likelihoods

    for name in ("Likelihood", "BernoulliLikelihood", "GaussianLikelihood", "LaplaceLikelihood"):
        cls = resolve_class(f"lightning_vae.distributions.likelihoods.{name}", "likelihood")
        assert cls is getattr(likelihoods, name)
    for name in ("CategoricalLikelihood", "DiscretizedLogisticMixtureLikelihood"):
        assert resolve_class(f"lightning_vae.distributions.likelihoods.{name}", "likelihood").__name__ == name
    description = describe(GaussianLikelihood("global", 0.5))
    assert description == {
        "class_path": "lightning_vae.distributions.likelihoods.GaussianLikelihood",
        "init_args": {"sigma_mode": "global", "sigma": 0.5, "data_shape": None},
    }
