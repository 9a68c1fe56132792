"""Flows (distributions/flows/) and MADE (nets/made.py): log-determinants against the autograd Jacobian in float64,
the planar invertibility constraint, the autoregressive structure of MADE and IAF steps, FlowPosterior's exact
log-density by the change of variables and its normalisation, and the values its log_prob refuses."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.autograd.functional import jacobian

from lightning_vae.distributions import (
    DiagonalGaussian,
    FlowPosterior,
    FullCovarianceGaussian,
    IAFStep,
    PlanarFlow,
    StandardNormal,
)
from lightning_vae.distributions.flows import Flow, apply_flows, iaf_steps
from lightning_vae.nets import MADE
from lightning_vae.nets.made import Order
from lightning_vae.objective import kl_terms


def _planar(dim: int, seed: int) -> PlanarFlow:
    torch.manual_seed(seed)
    flow = PlanarFlow(dim).double()
    with torch.no_grad():  # parameters large enough that the map is far from the identity
        flow.u.normal_(0.0, 1.5)
        flow.w.normal_(0.0, 1.5)
        flow.b.fill_(0.3)
    return flow


def _iaf(dim: int, context_dim: int, order: Order, seed: int) -> IAFStep:
    torch.manual_seed(seed)
    step = IAFStep(dim, hidden_sizes=(16, 16), context_dim=context_dim, order=order, forget_bias=0.0).double()
    with torch.no_grad():
        for p in step.parameters():
            p.mul_(3.0)  # σ well away from 1 and m far from 0
    return step


def _autograd_log_det(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    sign, log_abs = torch.linalg.slogdet(jacobian(fn, z))
    assert sign > 0  # every flow here preserves orientation
    return log_abs


@pytest.mark.parametrize("seed", range(3))
def test_planar_log_det_matches_the_autograd_jacobian(seed: int) -> None:
    flow = _planar(3, seed)
    for z in torch.randn(5, 3, dtype=torch.float64):
        _, log_det = flow(z)
        torch.testing.assert_close(log_det, _autograd_log_det(lambda v: flow(v)[0], z), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ["natural", "reversed"])
def test_iaf_log_det_matches_the_autograd_jacobian_and_is_triangular(order: Order) -> None:
    step = _iaf(4, context_dim=3, order=order, seed=1)
    h = torch.randn(3, dtype=torch.float64)
    for z in torch.randn(4, 4, dtype=torch.float64):
        jac = jacobian(lambda v: step(v, h)[0], z)
        # natural: z'_i depends on z_j for j <= i only (lower triangular); reversed: upper triangular.
        off = torch.triu(jac, diagonal=1) if order == "natural" else torch.tril(jac, diagonal=-1)
        assert torch.count_nonzero(off) == 0
        assert torch.count_nonzero(torch.tril(jac, -1) if order == "natural" else torch.triu(jac, 1)) > 0
        diag = torch.diagonal(jac)
        assert ((diag > 0) & (diag < 1)).all()  # σ = sigmoid(s)
        torch.testing.assert_close(step(z, h)[1], torch.log(diag).sum(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ["natural", "reversed"])
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_made_outputs_depend_only_on_earlier_inputs(order: Order, dim: int) -> None:
    torch.manual_seed(0)
    made = MADE(dim, hidden_sizes=(12, 12), n_params=2, context_dim=2, order=order).double()
    z, h = torch.randn(dim, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    jac_z = jacobian(lambda v: made(v, h), z).view(2, dim, dim)  # (param, output dim, input dim)
    jac_h = jacobian(lambda c: made(z, c), h).view(2, dim, 2)
    position = torch.arange(dim) if order == "natural" else torch.arange(dim).flip(0)
    allowed = position[None, :] < position[:, None]  # input j before output i in the order
    assert torch.count_nonzero(jac_z[:, ~allowed]) == 0
    assert torch.count_nonzero(jac_z[:, allowed]) == 2 * int(allowed.sum())  # every allowed path is used
    assert torch.count_nonzero(jac_h) == jac_h.numel()  # the context reaches every output


def test_made_and_iaf_refuse_a_missing_or_unexpected_context() -> None:
    with pytest.raises(ValueError, match="takes a context of size 3"):
        MADE(2, context_dim=3)(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="takes no context"):
        MADE(2)(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        MADE(2)(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="order"):
        MADE(2, order="random")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dim"):
        IAFStep(2.0)  # type: ignore[arg-type]


def test_planar_constraint_keeps_the_map_invertible() -> None:
    flow = PlanarFlow(2).double()
    with torch.no_grad():
        flow.w.copy_(torch.tensor([1.0, 0.0]))
        flow.u.copy_(torch.tensor([-5.0, 2.0]))  # wᵀu = -5: unconstrained, f folds over
    u_hat = flow.u_hat()
    torch.testing.assert_close((flow.w * u_hat).sum(), torch.nn.functional.softplus(torch.tensor(-5.0)).double() - 1)
    assert (flow.w * u_hat).sum() > -1
    # Along w the map is z1 + û1 tanh(z1): strictly increasing, hence one-to-one.
    grid = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    image = flow(torch.stack([grid, torch.zeros_like(grid)], -1))[0][:, 0]
    assert (image.diff() > 0).all()
    # The raw u would not be: 1 + h'(0) wᵀu = -4 < 0.
    assert 1 + (flow.w * flow.u).sum() < 0
    z = torch.randn(200, 2, dtype=torch.float64)
    assert torch.isfinite(flow(z)[1]).all()


def test_planar_with_zero_w_is_the_identity() -> None:
    flow = PlanarFlow(3)
    with torch.no_grad():
        flow.w.zero_()
    z = torch.randn(4, 3)
    out, log_det = flow(z)
    torch.testing.assert_close(out, z + torch.tanh(flow.b) * flow.u_hat())
    assert torch.isfinite(out).all() and torch.equal(log_det, torch.zeros(4))


def test_flow_posterior_log_prob_is_the_change_of_variables() -> None:
    """log q_K(z) from the posterior equals log N(ε) - log|det ∂z/∂ε| of the whole map ε -> z (autograd)."""
    torch.manual_seed(0)
    base = FullCovarianceGaussian(torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64),
                                  torch.randn(3, dtype=torch.float64))  # fmt: skip
    h = torch.randn(2, dtype=torch.float64)
    flows: list[Flow] = [_planar(3, 0), _iaf(3, 2, "natural", 1), _iaf(3, 2, "reversed", 2), _planar(3, 3)]
    q = FlowPosterior(base, flows, h)
    z = q.rsample()
    eps = base._last_sample[1]  # type: ignore[index]

    def push(e: Tensor) -> Tensor:
        return apply_flows(flows, base.loc + base.scale_tril @ e, h)[0]

    torch.testing.assert_close(push(eps), z)
    expected = -0.5 * (eps.square().sum() + 3 * math.log(2 * math.pi)) - _autograd_log_det(push, eps)
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
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        PlanarFlow(3)(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="n_steps"):
        iaf_steps(2, -1)
