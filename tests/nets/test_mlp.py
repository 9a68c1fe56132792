"""MLPEncoder and MLPDecoder (nets/mlp.py): the maps against a float64 re-implementation from their weights, the
output layouts, leading sample dimensions, rebuilding from the recorded arguments, and the argument checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from lightning_vae.building import build, describe
from lightning_vae.nets import MLPDecoder, MLPEncoder


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.detach().double().T + layer.bias.detach().double()


def test_the_encoder_is_flatten_hidden_layers_and_a_head_split_in_two() -> None:
    torch.manual_seed(0)
    encoder = MLPEncoder((2, 3, 4), latent_dim=5, hidden_sizes=(16, 8), activation="tanh")
    x = torch.randn(7, 2, 3, 4)
    linears = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(24, 16), (16, 8), (8, 10)]
    h = x.double().flatten(1)
    for layer in linears[:-1]:
        h = torch.tanh(_linear(h, layer))
    out = _linear(h, linears[-1])
    loc, log_var = encoder(x)
    torch.testing.assert_close(loc.double(), out[:, :5], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_var.double(), out[:, 5:], rtol=1e-5, atol=1e-6)


def test_the_decoder_lays_out_parameters_per_element_then_the_example_shape() -> None:
    torch.manual_seed(0)
    decoder = MLPDecoder(3, (1, 2, 2), hidden_sizes=(8,), activation="relu", params_per_element=3)
    z = torch.randn(2, 5, 3)  # samples (k, B, D)
    out = decoder(z)
    assert out.shape == (2, 5, 3, 1, 2, 2)
    linears = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    flat = _linear(F.relu(_linear(z.double(), linears[0])), linears[1])  # (k, B, 3 * 4)
    torch.testing.assert_close(out.double(), flat.view(2, 5, 3, 1, 2, 2), rtol=1e-5, atol=1e-6)
    single = MLPDecoder(3, (1, 2, 2), hidden_sizes=(8,))
    assert single(torch.randn(5, 3)).shape == (5, 1, 2, 2)
    torch.testing.assert_close(single(z)[1], single(z[1]), rtol=1e-6, atol=1e-6)  # each sample decoded alone


def test_an_example_of_another_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"MLPEncoder expects examples of shape \(B, \*\(1, 4, 4\)\), got \(2, 16\)"):
        MLPEncoder((1, 4, 4), latent_dim=2)(torch.zeros(2, 16))


def test_both_networks_rebuild_from_their_recorded_arguments() -> None:
    for net in (MLPEncoder((1, 5, 5), 3, (7,), "elu"), MLPDecoder(3, (1, 5, 5), (), "gelu", 2)):
        copy = build(describe(net), "encoder")
        assert type(copy) is type(net) and str(copy) == str(net)
        copy.load_state_dict(net.state_dict())  # the same parameters, name for name and shape for shape


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: MLPEncoder(latent_dim=0), ValueError, r"Expected `latent_dim` to be an int >= 1, got 0"),
        (lambda: MLPEncoder(latent_dim=2.0), TypeError, r"Expected `latent_dim` to be an int, got 2.0 \(float\)"),
        (lambda: MLPEncoder(input_shape=(1, 0)), ValueError, r"`input_shape` to be a non-empty sequence of sizes"),
        (lambda: MLPEncoder(input_shape=784), TypeError, r"`input_shape` to be a sequence of ints"),
        (lambda: MLPEncoder(hidden_sizes=(400, -1)), ValueError, r"`hidden_sizes` .*got \(400, -1\)"),
        (lambda: MLPDecoder(hidden_sizes=400), TypeError, r"`hidden_sizes` to be a sequence of ints"),
        (lambda: MLPDecoder(params_per_element=0), ValueError, r"`params_per_element` to be an int >= 1"),
        (lambda: MLPDecoder(activation="swish"), ValueError, r"`activation` to be one of \('relu', .*got 'swish'"),
        (lambda: MLPDecoder(activation=None), TypeError, r"`activation` to be one of"),
    ],
)
def test_arguments_are_checked(factory: Callable[[], object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


def test_empty_hidden_sizes_mean_no_hidden_layer() -> None:
    assert len(MLPEncoder(hidden_sizes=()).body) == 0
