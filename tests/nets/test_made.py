"""MADE (nets/made.py): outputs depend only on earlier inputs in the order (autograd Jacobian), every allowed path
is used, the context reaches every output; the masks and degrees; the inputs and contexts it refuses."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from lightning_vae.nets import MADE
from lightning_vae.nets.made import MaskedLinear, Order, input_degrees


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


def test_without_a_context_the_first_output_is_a_constant() -> None:
    torch.manual_seed(0)
    made = MADE(3, hidden_sizes=(8,), n_params=1).double()
    z = torch.randn(10, 3, dtype=torch.float64)
    with torch.no_grad():
        out = made(z)
    assert out.shape == (10, 3)
    torch.testing.assert_close(out[:, 0], out[:1, 0].expand(10), rtol=0, atol=0)  # z_1 has no predecessor
    assert float(out[:, 2].std()) > 0


def test_masked_linear_multiplies_the_weight_by_its_mask() -> None:
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    layer = MaskedLinear(mask)
    assert (layer.in_features, layer.out_features) == (3, 2) and "mask" in dict(layer.named_buffers())
    x = torch.randn(4, 3)
    torch.testing.assert_close(layer(x), x @ (layer.weight * mask).T + layer.bias)
    layer(x).sum().backward()
    assert torch.equal(layer.weight.grad * (1 - mask), torch.zeros(2, 3))  # masked weights get no gradient


def test_input_degrees_are_the_positions_in_the_order() -> None:
    assert input_degrees(4, "natural").tolist() == [1, 2, 3, 4]
    assert input_degrees(4, "reversed").tolist() == [4, 3, 2, 1]


def test_made_refuses_a_missing_or_unexpected_context() -> None:
    with pytest.raises(ValueError, match="takes a context of size 3"):
        MADE(2, context_dim=3)(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="takes no context"):
        MADE(2)(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        MADE(2)(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="order"):
        MADE(2, order="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`hidden_sizes` to be a non-empty sequence"):
        MADE(2, hidden_sizes=())
