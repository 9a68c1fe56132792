"""encode_png against a PNG reader written from the specification, and Pillow when it is installed."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from support.images import decode_png, quantize

from lightning_vae.viz import encode_png


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_encode_png_round_trips_through_a_spec_reader(channels: int) -> None:
    array = np.random.default_rng(channels).integers(0, 256, size=(7, 11, channels), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(array)), array)


def test_encode_png_from_a_float_tensor_rounds_to_8_bit() -> None:
    image = torch.rand(3, 9, 13)
    np.testing.assert_array_equal(decode_png(encode_png(image)), quantize(image))
    np.testing.assert_array_equal(decode_png(encode_png(np.full((2, 3), 200, np.uint8)))[..., 0], np.full((2, 3), 200))


def test_encode_png_is_read_by_pillow() -> None:
    """A second, independent decoder (Pillow is only a test-time reference, not a dependency)."""
    image_module = pytest.importorskip("PIL.Image")
    for channels, mode in ((1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")):
        array = np.random.default_rng(0).integers(0, 256, size=(6, 5, channels), dtype=np.uint8)
        decoded = image_module.open(io.BytesIO(encode_png(array)))
        assert decoded.mode == mode
        np.testing.assert_array_equal(np.asarray(decoded).reshape(6, 5, channels), array)


def test_encode_png_rejects_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match=r"uint8 array \(H, W, C\) with C in \(1, 2, 3, 4\), got dtype float64"):
        encode_png(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"uint8 array .* shape \(2, 2, 5\)"):
        encode_png(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match=r"tensor image of shape \(C, H, W\), got \(2, 2\)"):
        encode_png(torch.zeros(2, 2))
