"""The building blocks of hierarchical models (models/layers.py): mlp and GaussianConditional against a float64
re-implementation from their weights, on inputs with leading sample dimensions, and their argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_vae.models.layers import GaussianConditional, mlp


def test_mlp_is_linear_layers_each_followed_by_the_activation() -> None:
    torch.manual_seed(0)
    net = mlp([4, 8, 3], "tanh").double()
    assert [type(m) for m in net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh]
    x = torch.randn(5, 4, dtype=torch.float64)
    first, second = net[0], net[2]
    expected = torch.tanh(torch.tanh(x @ first.weight.T + first.bias) @ second.weight.T + second.bias)
    torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)
    assert len(mlp([4], "relu")) == 0  # one size: no layer


def test_a_gaussian_conditional_maps_any_leading_dimensions_to_loc_and_log_var() -> None:
    torch.manual_seed(0)
    layer = GaussianConditional(3, 2, hidden_sizes=(8, 8), activation="elu").double()
    h = torch.randn(4, 5, 3, dtype=torch.float64)  # samples (k, B, in)
    loc, log_var = layer(h)
    assert loc.shape == log_var.shape == (4, 5, 2) and layer.out_features == 2
    a = h
    for linear in (layer.body[0], layer.body[2]):
        a = nn.functional.elu(a @ linear.weight.T + linear.bias)
    out = a @ layer.head.weight.T + layer.head.bias
    torch.testing.assert_close(loc, out[..., :2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_var, out[..., 2:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(h[2])[0], loc[2], rtol=1e-12, atol=1e-12)  # each sample row alone


def test_without_hidden_layers_a_gaussian_conditional_is_one_linear_map() -> None:
    layer = GaussianConditional(3, 2)
    assert len(layer.body) == 0 and (layer.head.in_features, layer.head.out_features) == (3, 4)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: GaussianConditional(0, 2), ValueError, r"`in_features` to be an int >= 1, got 0"),
        (lambda: GaussianConditional(3, 2.0), TypeError, r"`out_features` to be an int, got 2.0 \(float\)"),
        (lambda: GaussianConditional(3, 2, (8, 0)), ValueError, r"`hidden_sizes\[i\]` to be an int >= 1, got 0"),
        (lambda: GaussianConditional(3, 2, (8,), "swish"), ValueError, r"`activation` to be one of"),
    ],
)
def test_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()
