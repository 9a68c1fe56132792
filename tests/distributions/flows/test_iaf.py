"""IAFStep and iaf_steps (distributions/flows/iaf.py): the log-determinant against the autograd Jacobian in float64,
the triangular structure of each order, the update of Kingma et al. (2016), and the alternating orders."""

from __future__ import annotations

import pytest
import torch
from support.flows import iaf
from torch.autograd.functional import jacobian

from lightning_vae.distributions import IAFStep
from lightning_vae.distributions.flows import iaf_steps
from lightning_vae.nets.made import Order


@pytest.mark.parametrize("order", ["natural", "reversed"])
def test_iaf_log_det_matches_the_autograd_jacobian_and_is_triangular(order: Order) -> None:
    step = iaf(4, context_dim=3, order=order, seed=1)
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


def test_the_step_is_the_stable_update_of_kingma_et_al() -> None:
    """z' = σ z + (1 - σ) m with σ = sigmoid(s + forget_bias), (m, s) the MADE's two halves."""
    torch.manual_seed(0)
    step = IAFStep(3, hidden_sizes=(8,), context_dim=2, forget_bias=1.5).double()
    z, h = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        m, s = step.made(z, h).chunk(2, dim=-1)
        sigma = 1 / (1 + torch.exp(-(s + 1.5)))
        out, log_det = step(z, h)
    torch.testing.assert_close(out, sigma * z + (1 - sigma) * m, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_det, torch.log(sigma).sum(-1), rtol=1e-12, atol=1e-12)


def test_a_new_step_starts_near_the_identity() -> None:
    torch.manual_seed(0)
    step = IAFStep(4, hidden_sizes=(32,))  # forget_bias 2: σ near sigmoid(2) ≈ 0.88
    z = torch.randn(256, 4)
    with torch.no_grad():
        out, log_det = step(z)
    assert float(((out - z).norm(dim=-1) / z.norm(dim=-1)).median()) < 0.5
    expected = 4 * torch.nn.functional.logsigmoid(torch.tensor(2.0))
    assert abs(float(log_det.mean()) - float(expected)) < 0.5


def test_iaf_steps_alternate_their_order_natural_first() -> None:
    steps = iaf_steps(3, 5, hidden_sizes=(8,), context_dim=2, forget_bias=0.5)
    assert [s.made.order for s in steps] == ["natural", "reversed", "natural", "reversed", "natural"]
    assert all(s.dim == 3 and s.forget_bias == 0.5 and s.made.context_dim == 2 for s in steps)
    assert iaf_steps(3, 0) == []


def test_iaf_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="dim"):
        IAFStep(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_steps"):
        iaf_steps(2, -1)
    with pytest.raises(ValueError, match=r"`forget_bias` to be a finite float, got inf"):
        IAFStep(2, forget_bias=float("inf"))
