"""FlowPosterior and apply_flows (distributions/flows/base.py): the exact log-density by the change of variables
against the autograd Jacobian, its normalisation, the values log_prob refuses, the Monte Carlo KL and the mean."""

from __future__ import annotations

import math

import pytest
import torch
from support.flows import autograd_log_det, iaf, planar
from torch import Tensor

from lightning_vae.distributions import (
    DiagonalGaussian,
    FlowPosterior,
    FullCovarianceGaussian,
    PlanarFlow,
    StandardNormal,
)
from lightning_vae.distributions.flows import Flow, apply_flows, iaf_steps
from lightning_vae.objective import kl_terms


def test_apply_flows_composes_the_maps_and_adds_their_log_determinants() -> None:
    flows: list[Flow] = [planar(3, 0), iaf(3, 2, "natural", 1), planar(3, 2)]
    z, h = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    out, total = apply_flows(flows, z, h)
    expected, log_dets = z, []
    for flow in flows:
        expected, log_det = flow(expected, h)
        log_dets.append(log_det)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(total, sum(log_dets), rtol=1e-12, atol=1e-12)
    for i in range(4):  # the total is the log-determinant of the composed map, by autograd
        context = h[i : i + 1]
        got = autograd_log_det(lambda v, c=context: apply_flows(flows, v.unsqueeze(0), c)[0][0], z[i])
        torch.testing.assert_close(total[i], got, rtol=1e-10, atol=1e-10)
    none, zero = apply_flows([], z)
    assert none is z and torch.equal(zero, torch.zeros(4, dtype=torch.float64))


def test_flow_posterior_log_prob_is_the_change_of_variables() -> None:
    """log q_K(z) from the posterior equals log N(ε) - log|det ∂z/∂ε| of the whole map ε -> z (autograd)."""
    torch.manual_seed(0)
    base = FullCovarianceGaussian(torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64),
                                  torch.randn(3, dtype=torch.float64))  # fmt: skip
    h = torch.randn(2, dtype=torch.float64)
    flows: list[Flow] = [planar(3, 0), iaf(3, 2, "natural", 1), iaf(3, 2, "reversed", 2), planar(3, 3)]
    q = FlowPosterior(base, flows, h)
    z = q.rsample()
    eps = base._last_sample[1]  # type: ignore[index]

    def push(e: Tensor) -> Tensor:
        return apply_flows(flows, base.loc + base.scale_tril @ e, h)[0]

    torch.testing.assert_close(push(eps), z)
    expected = -0.5 * (eps.square().sum() + 3 * math.log(2 * math.pi)) - autograd_log_det(push, eps)
    torch.testing.assert_close(q.log_prob(z), expected, rtol=1e-10, atol=1e-10)


def test_flow_posterior_is_normalised() -> None:
    """E_q[p(z) / q(z)] = 1 for any normalised p: a wrong log-determinant (an offset or a wrong shape) moves it."""
    torch.manual_seed(0)
    base = DiagonalGaussian(torch.tensor([[0.5, -0.3]]), torch.tensor([[-0.5, 0.2]]))
    flows = iaf_steps(2, 2, hidden_sizes=(16,)) + [PlanarFlow(2, init_scale=0.8)]
    q = FlowPosterior(base, flows)
    with torch.no_grad():
        z = q.sample((200_000,))
        # p narrower than q (half its spread, at its median), so the weights p/q are bounded and the estimate tight
        p = DiagonalGaussian(z.median(0).values, torch.log((0.5 * z.std(0)) ** 2))
        log_p = p.log_prob(z)
        estimate = (log_p - q.log_prob(z)).double().exp().mean()
        z0 = base._last_sample[0]  # type: ignore[index]
        without_log_det = (log_p - base.log_prob(z0)).double().exp().mean()
    assert abs(estimate.item() - 1.0) < 0.02
    assert abs(without_log_det.item() - 1.0) > 0.1  # the test can tell a missing log-determinant


def test_flow_posterior_log_prob_refuses_other_values() -> None:
    base = DiagonalGaussian(torch.zeros(4, 2), torch.zeros(4, 2))
    q = FlowPosterior(base, [PlanarFlow(2)])
    z = q.rsample((3,))
    assert z.float() is z and q.log_prob(z.float()).shape == (3, 4)
    for other in (z.clone(), z.detach(), z[:1], torch.zeros(3, 4, 2)):
        with pytest.raises(ValueError, match="exact only for the sample"):
            q.log_prob(other)
    q.sample((2,))  # a newer sample replaces the old one
    with pytest.raises(ValueError, match="returned last"):
        q.log_prob(z)
    no_flows = FlowPosterior(base, [])
    values = torch.randn(5, 4, 2)
    torch.testing.assert_close(no_flows.log_prob(values), base.log_prob(values))


def test_flow_posterior_in_the_monte_carlo_kl_and_its_mean() -> None:
    torch.manual_seed(0)
    base = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3))
    h = torch.randn(4, 5)
    steps = iaf_steps(3, 2, hidden_sizes=(8,), context_dim=5)
    q = FlowPosterior(base, steps, h)
    z = q.rsample((2,))
    kl, elementwise = kl_terms(q, StandardNormal(3), z)
    assert elementwise is None and kl.shape == (2, 4)
    torch.testing.assert_close(kl, q.log_prob(z) - StandardNormal(3).log_prob(z))
    torch.testing.assert_close(q.mean, apply_flows(steps, base.mean, h)[0])
    with pytest.raises(NotImplementedError, match="no closed-form variance"):
        q.variance  # noqa: B018
    assert q.batch_shape == (4,) and q.event_shape == (3,)


def test_autocast_samples_are_float32_and_keep_their_density() -> None:
    torch.manual_seed(0)
    base = DiagonalGaussian(torch.randn(4, 3), torch.zeros(4, 3))
    q = FlowPosterior(base, iaf_steps(3, 2, hidden_sizes=(8,)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = q.rsample((2,))
    assert z.dtype == torch.float32 and z.float() is z
    log_q = q.log_prob(z)
    assert log_q.dtype == torch.float32 and torch.isfinite(log_q).all()


def test_flow_posterior_refuses_wrong_arguments() -> None:
    base = DiagonalGaussian(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="`base`"):
        FlowPosterior(torch.zeros(4, 2), [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="event shape"):
        FlowPosterior(torch.distributions.Normal(torch.zeros(4), torch.ones(4)), [])
    with pytest.raises(TypeError, match=r"`flows\[0\]`"):
        FlowPosterior(base, [torch.nn.Linear(2, 2)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="size 2, got size 3"):
        FlowPosterior(base, [PlanarFlow(3)])
