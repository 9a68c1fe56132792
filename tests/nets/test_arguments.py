"""Argument checks of the reference networks: TypeError for a wrong type, ValueError for a wrong value."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lightning_vae.nets import ConvDecoder, ConvEncoder, MaskedConv2d, MLPDecoder, MLPEncoder, PixelCNNDecoder
from lightning_vae.nets.common import make_activation


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
        (lambda: ConvEncoder(image_size=48), ValueError, r"`image_size` to be one of \(28, 32, 64\), got 48"),
        (lambda: ConvEncoder(image_size="28"), TypeError, r"`image_size` to be an int, got '28'"),
        (lambda: ConvEncoder(channels=(32,)), ValueError, r"`channels` to hold 2 ints >= 1 for 28x28"),
        (lambda: ConvDecoder(channels=(32, 0)), ValueError, r"`channels` to be a non-empty sequence of sizes >= 1"),
        (lambda: ConvDecoder(out_channels=True), TypeError, r"`out_channels` to be an int, got True"),
        (lambda: MaskedConv2d(1, 1, 4, "A"), ValueError, r"`kernel_size` to be odd, got 4"),
        (lambda: MaskedConv2d(1, 1, 3, "C"), ValueError, r"`mask_type` to be one of \('A', 'B'\), got 'C'"),
        (lambda: PixelCNNDecoder(2, (1, 8, 8), n_layers=2, dilations=[1, 0]), ValueError, r"`dilations` to be"),
        (lambda: PixelCNNDecoder(2, (1, 8, 8), n_layers=2, dilations=[1]), ValueError, r"`dilations` to hold 2"),
    ],
)
def test_arguments_are_checked(factory: Callable[[], object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


def test_empty_hidden_sizes_mean_no_hidden_layer() -> None:
    assert len(MLPEncoder(hidden_sizes=()).body) == 0
    assert type(make_activation("tanh")).__name__ == "Tanh"
