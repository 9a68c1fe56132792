"""PlanarFlow (distributions/flows/planar.py): the log-determinant against the autograd Jacobian in float64, the
invertibility constraint on û, the map at w = 0, and the shapes it refuses."""

from __future__ import annotations

import pytest
import torch
from support.flows import autograd_log_det, planar

from lightning_vae.distributions import PlanarFlow


@pytest.mark.parametrize("seed", range(3))
def test_planar_log_det_matches_the_autograd_jacobian(seed: int) -> None:
    flow = planar(3, seed)
    for z in torch.randn(5, 3, dtype=torch.float64):
        _, log_det = flow(z)
        torch.testing.assert_close(log_det, autograd_log_det(lambda v: flow(v)[0], z), rtol=1e-10, atol=1e-10)


def test_planar_is_the_formula_of_rezende_and_mohamed() -> None:
    """f(z) = z + û tanh(wᵀz + b), written out in float64 from the paper's equation (10)."""
    flow = planar(4, seed=5)
    z = torch.randn(6, 4, dtype=torch.float64)
    u_hat = flow.u_hat().detach()
    expected = z + torch.tanh(z @ flow.w.detach() + flow.b.detach()).unsqueeze(-1) * u_hat
    torch.testing.assert_close(flow(z)[0], expected, rtol=1e-12, atol=1e-12)
    leading = torch.randn(2, 3, 4, dtype=torch.float64)  # samples (k, B, D): the same map on every row
    out, log_det = flow(leading)
    assert out.shape == (2, 3, 4) and log_det.shape == (2, 3)
    torch.testing.assert_close(out[1, 2], flow(leading[1, 2])[0], rtol=1e-12, atol=1e-12)


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


def test_planar_refuses_other_sizes_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        PlanarFlow(3)(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"`dim` to be an int >= 1, got 0"):
        PlanarFlow(0)
    with pytest.raises(ValueError, match=r"`init_scale` to be a finite float >= 0, got -1.0"):
        PlanarFlow(2, init_scale=-1.0)
