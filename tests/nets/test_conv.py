"""ConvEncoder and ConvDecoder (nets/conv.py): the maps against a re-implementation from their weights with
torch.nn.functional, the sizes of every stage for 28, 32 and 64 pixels, the output layouts, and the argument
checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from lightning_vae.nets import ConvDecoder, ConvEncoder
from lightning_vae.nets.conv import DEFAULT_CHANNELS


def _layers(module: torch.nn.Module, kind: type) -> list:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("size", [28, 32, 64])
def test_the_encoder_is_stride_two_convolutions_then_dense_layers(size: int) -> None:
    torch.manual_seed(0)
    encoder = ConvEncoder(2, size, latent_dim=3, hidden_size=16).double()
    x = torch.rand(3, 2, size, size, dtype=torch.float64)
    h = x
    convs = _layers(encoder, torch.nn.Conv2d)
    assert [c.out_channels for c in convs] == list(DEFAULT_CHANNELS[size])
    for conv in convs:
        h = F.relu(F.conv2d(h, conv.weight, conv.bias, stride=2, padding=1))  # 4x4 kernels halve the side
    assert h.shape[-1] == size // 2 ** len(convs) and h.shape[-1] in (4, 7)
    dense, head = _layers(encoder, torch.nn.Linear)
    out = F.linear(F.relu(F.linear(h.flatten(1), dense.weight, dense.bias)), head.weight, head.bias)
    loc, log_var = encoder(x)
    torch.testing.assert_close(torch.cat([loc, log_var], -1), out, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [28, 32, 64])
def test_the_decoder_mirrors_the_encoder_up_to_the_image_size(size: int) -> None:
    torch.manual_seed(0)
    decoder = ConvDecoder(3, out_channels=2, image_size=size, hidden_size=16).double()
    z = torch.randn(4, 3, dtype=torch.float64)
    first, second = _layers(decoder, torch.nn.Linear)
    chans = DEFAULT_CHANNELS[size]
    side = size // 2 ** len(chans)
    h = F.relu(F.linear(F.relu(F.linear(z, first.weight, first.bias)), second.weight, second.bias))
    h = h.view(4, chans[-1], side, side)
    ups = _layers(decoder, torch.nn.ConvTranspose2d)
    for i, up in enumerate(ups):
        h = F.conv_transpose2d(h, up.weight, up.bias, stride=2, padding=1)
        h = F.relu(h) if i < len(ups) - 1 else h  # no nonlinearity after the last: the likelihood's parameters
    assert h.shape == (4, 2, size, size)
    torch.testing.assert_close(decoder(z), h, rtol=1e-10, atol=1e-10)


def test_decoder_output_layouts_and_leading_dimensions() -> None:
    torch.manual_seed(0)
    decoder = ConvDecoder(3, out_channels=1, image_size=28, params_per_element=4)
    z = torch.randn(2, 5, 3)
    out = decoder(z)
    assert out.shape == (2, 5, 4, 1, 28, 28)
    torch.testing.assert_close(out[1], decoder(z[1]), rtol=1e-6, atol=1e-6)
    assert ConvDecoder(3, out_channels=3, image_size=32)(z[0]).shape == (5, 3, 32, 32)


def test_chosen_channels_and_the_shape_check() -> None:
    encoder = ConvEncoder(1, 28, latent_dim=2, channels=(8, 16))
    assert [c.out_channels for c in _layers(encoder, torch.nn.Conv2d)] == [8, 16]
    assert encoder.input_shape == (1, 28, 28)
    message = r"ConvEncoder expects images of shape \(B, \*\(1, 28, 28\)\), got \(2, 1, 32, 32\)"
    with pytest.raises(ValueError, match=message):
        encoder(torch.zeros(2, 1, 32, 32))
    decoder = ConvDecoder(2, 1, 28, channels=(8, 16))
    assert [c.in_channels for c in _layers(decoder, torch.nn.ConvTranspose2d)] == [16, 8]


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: ConvEncoder(image_size=48), ValueError, r"`image_size` to be one of \(28, 32, 64\), got 48"),
        (lambda: ConvEncoder(image_size="28"), TypeError, r"`image_size` to be an int, got '28'"),
        (lambda: ConvEncoder(channels=(32,)), ValueError, r"`channels` to hold 2 ints >= 1 for 28x28"),
        (lambda: ConvDecoder(channels=(32, 0)), ValueError, r"`channels` to be a non-empty sequence of sizes >= 1"),
        (lambda: ConvDecoder(out_channels=True), TypeError, r"`out_channels` to be an int, got True"),
        (lambda: ConvEncoder(hidden_size=0), ValueError, r"`hidden_size` to be an int >= 1, got 0"),
    ],
)
def test_arguments_are_checked(factory: Callable[[], object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()
