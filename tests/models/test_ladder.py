"""LadderVAEModel and precision_weighted (models/ladder.py): top-down posteriors that merge the bottom-up evidence
with the generative prior (Sønderby et al. 2016, eq. 17-19), against a float64 product of Gaussians."""

from __future__ import annotations

import pytest
import torch

from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.models import LadderVAEModel
from lightning_vae.models.ladder import precision_weighted

SHAPE = (1, 6, 6)


def _models() -> dict:
    torch.manual_seed(0)
    return {"ladder": LadderVAEModel(SHAPE, latent_sizes=(5, 3, 2), hidden_sizes=((16,), (8,), (8,)))}


def test_ladder_posteriors_merge_the_evidence_with_the_generative_prior() -> None:
    model = _models()["ladder"]
    x = torch.rand(4, *SHAPE).round()
    inference, generative = model(x, n_samples=2)
    evidence = model._evidence(x)
    for i in (2, 1):
        prior = generative.priors[f"z{i}"]  # from the generative network, given the same sample above
        loc, log_var = evidence[i - 1]
        # Product of two Gaussians, in float64 from precisions.
        p_a, p_b = (-log_var.double()).exp(), (-prior.log_var.double()).exp()
        var = 1 / (p_a + p_b)
        mean = (loc.double() * p_a + prior.loc.double() * p_b) * var
        q = inference.posteriors[f"z{i}"]
        torch.testing.assert_close(q.loc.double(), mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(q.log_var.double(), var.log(), rtol=1e-4, atol=1e-4)


def test_precision_weighting_stays_finite_at_extreme_scales() -> None:
    loc, log_var = precision_weighted(torch.tensor([1.0]), torch.tensor([-80.0]), torch.tensor([5.0]),
                                      torch.tensor([80.0]))  # fmt: skip
    assert loc.item() == pytest.approx(1.0) and log_var.item() == pytest.approx(-80.0)


def test_precision_weighting_is_the_normalised_product_of_two_gaussians() -> None:
    g = torch.Generator().manual_seed(0)
    loc_a, loc_b, lv_a, lv_b = torch.randn(4, 50, generator=g, dtype=torch.float64) * torch.tensor([[1], [1], [4], [4]])
    loc, log_var = precision_weighted(loc_a, lv_a, loc_b, lv_b)
    # N(a) N(b) ∝ N(m, v): 1/v = 1/va + 1/vb, m = v (ma/va + mb/vb) (Sønderby et al. 2016, eq. 18-19)
    var = 1 / (1 / lv_a.exp() + 1 / lv_b.exp())
    torch.testing.assert_close(log_var, var.log(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loc, var * (loc_a / lv_a.exp() + loc_b / lv_b.exp()), rtol=1e-10, atol=1e-12)
    # the product's density is the normalised pointwise product: log N(z; m, v) - log N(z; a) - log N(z; b) is constant
    z = torch.linspace(-3, 3, 7, dtype=torch.float64).unsqueeze(-1)

    def log_n(m, lv):
        return DiagonalGaussian(m.unsqueeze(-1), lv.unsqueeze(-1)).log_prob(z.unsqueeze(-1))

    diff = log_n(loc, log_var) - log_n(loc_a, lv_a) - log_n(loc_b, lv_b)  # (7, 50)
    torch.testing.assert_close(diff, diff[:1].expand_as(diff), rtol=0, atol=1e-6)
    # symmetric in its two Gaussians
    swapped = precision_weighted(loc_b, lv_b, loc_a, lv_a)
    torch.testing.assert_close(swapped[0], loc, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(swapped[1], log_var, rtol=1e-12, atol=1e-12)


def test_the_top_posterior_is_the_evidence_and_lower_ones_depend_on_the_sample_above() -> None:
    model = _models()["ladder"]
    x = torch.rand(4, *SHAPE).round()
    inference, _ = model(x, n_samples=3)
    evidence = model._evidence(x)
    top = inference.posteriors["z3"]
    torch.testing.assert_close(top.loc, evidence[-1][0], rtol=0, atol=0)
    torch.testing.assert_close(top.log_var, evidence[-1][1], rtol=0, atol=0)
    assert top.batch_shape == (4,) and inference.z["z3"].shape == (3, 4, 2)
    for group, size in (("z2", 3), ("z1", 5)):
        assert inference.posteriors[group].batch_shape == (3, 4) and inference.z[group].shape == (3, 4, size)
    # the bottom-up blocks: widths from the data to each layer's hidden size, then a Gaussian head per layer
    assert [head.out_features for head in model.evidence] == [10, 6, 4]
    assert [block[0].in_features for block in model.bottom_up] == [36, 16, 8]


def test_a_ladder_rebuilds_from_its_recorded_arguments() -> None:
    model = _models()["ladder"]
    assert dict(model.hparams)["latent_sizes"] == (5, 3, 2)
    copy = LadderVAEModel(**dict(model.hparams))
    copy.load_state_dict(model.state_dict())
    x = torch.rand(2, *SHAPE).round()
    torch.manual_seed(3)
    expected = model.log_weights(x, 4)
    torch.manual_seed(3)
    torch.testing.assert_close(copy.log_weights(x, 4), expected, rtol=0, atol=0)
