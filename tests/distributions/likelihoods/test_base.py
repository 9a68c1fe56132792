"""The Likelihood base (distributions/likelihoods/base.py): the reduction over data dimensions, the target and
decoder-shape checks every likelihood shares, means and samples in data space, and the public class paths."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.distributions import Normal

from lightning_vae.distributions import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    DiscretizedLogisticMixtureLikelihood,
    GaussianLikelihood,
    Likelihood,
)


class UnitGaussian(Likelihood):
    """The smallest subclass: N(params, 1) per element, through the base class's reduction."""

    name = "unit_gaussian"

    def elementwise_log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return Normal(params, 1.0).log_prob(x)

    def mean(self, params: Tensor) -> Tensor:
        return params

    def sample(self, params: Tensor) -> Tensor:
        return params + torch.randn_like(params)


def test_log_prob_sums_the_data_dimensions_and_keeps_the_sample_and_batch_dimensions() -> None:
    torch.manual_seed(0)
    x, params = torch.randn(4, 2, 3), torch.randn(5, 4, 2, 3)
    lik = UnitGaussian()
    out = lik.log_prob(x, params)
    assert out.shape == (5, 4)
    reference = Normal(params.double(), 1.0).log_prob(x.double()).sum((-2, -1))
    torch.testing.assert_close(out.double(), reference, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lik.nll(x, params), -out, rtol=0, atol=0)
    assert lik.param_shape((2, 3)) == (2, 3)


def test_half_precision_inputs_are_evaluated_in_float32() -> None:
    x, params = torch.randn(4, 6), torch.randn(4, 6)
    lik = UnitGaussian()
    half = lik.log_prob(x.half(), params.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, lik.log_prob(x.half().float(), params.half().float()), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("lik", "bad", "match"),
    [
        (BernoulliLikelihood(), torch.tensor([[0.0, 2.0]]), r"expects targets in \[0, 1\], got values in \[0, 2\]"),
        (BernoulliLikelihood(), torch.tensor([[0.0, float("nan")]]), "1 NaN or infinite"),
        (GaussianLikelihood(), torch.tensor([[0.0, float("inf")]]), "NaN or infinite"),
        (DiscretizedLogisticMixtureLikelihood(), torch.tensor([[-0.5]]), r"targets in \[0, 1\]"),
    ],
)
def test_bad_targets_are_named(lik, bad: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lik.check_target(bad)


def test_targets_within_the_range_pass_and_an_open_range_takes_any_finite_value() -> None:
    BernoulliLikelihood().check_target(torch.tensor([[0.0, 0.3, 1.0]]))  # the closed interval's ends included
    GaussianLikelihood().check_target(torch.tensor([[-1e30, 1e30]]))
    with pytest.raises(ValueError, match=r"got values in \[-1e-06, 1\]"):
        BernoulliLikelihood().check_target(torch.tensor([[-1e-6, 1.0]]))


def test_wrong_decoder_shape_is_named() -> None:
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(
        ValueError, match=r"decoder returned a tensor of shape \(4, 784\).*\(batch=4, \*\(1, 28, 28\)\)"
    ):
        BernoulliLikelihood().check_params(x, torch.zeros(4, 784))
    with pytest.raises(ValueError, match=r"categorical likelihood expects \(batch=4, \*\(256, 1, 28, 28\)\)"):
        CategoricalLikelihood().check_params(x, torch.zeros(4, 1, 28, 28))


def test_decoder_shapes_with_sample_dimensions_pass_and_a_wrong_batch_is_named() -> None:
    x = torch.rand(4, 1, 3, 3)
    BernoulliLikelihood().check_params(x, torch.zeros(7, 4, 1, 3, 3), sample_dims=1)
    DiscretizedLogisticMixtureLikelihood(2).check_params(x, torch.zeros(4, 6, 1, 3, 3))
    with pytest.raises(ValueError, match=r"returned a tensor of shape \(5, 1, 3, 3\).*\(batch=4, "):
        BernoulliLikelihood().check_params(x, torch.zeros(5, 1, 3, 3))


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
