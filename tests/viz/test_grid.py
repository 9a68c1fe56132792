"""make_grid and interleave_rows against a grid laid out cell by cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.images import reference_grid

from lightning_vae.viz import check_value_range, image_grid, interleave_rows, make_grid, to_display


@pytest.mark.parametrize(("n", "nrow", "padding"), [(1, 8, 2), (5, 3, 1), (8, 4, 0), (7, 7, 3), (10, 4, 2)])
def test_make_grid_places_each_image_in_its_cell(n: int, nrow: int, padding: int) -> None:
    images = torch.rand(n, 3, 5, 6)
    got = make_grid(images, nrow=nrow, padding=padding, pad_value=0.25)
    np.testing.assert_array_equal(got.numpy(), reference_grid(images.numpy(), nrow, padding, 0.25))


def test_make_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"images of shape \(N, C, H, W\), got \(3, 4, 4\)"):
        make_grid(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="Expected `nrow` to be an int >= 1, got 0"):
        make_grid(torch.rand(2, 1, 4, 4), nrow=0)
    with pytest.raises(TypeError, match=r"Expected `nrow` to be an int, got 2.0 \(float\)"):
        make_grid(torch.rand(2, 1, 4, 4), nrow=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Expected `images` to be a tensor, got"):
        make_grid(np.zeros((2, 1, 4, 4)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`padding` to be an int >= 0, got -1"):
        make_grid(torch.rand(2, 1, 4, 4), padding=-1)


def test_interleave_rows_alternates_rows_of_inputs_and_outputs() -> None:
    x, y = torch.arange(5.0).view(5, 1, 1, 1), 10 + torch.arange(5.0).view(5, 1, 1, 1)
    got = interleave_rows(x, y, nrow=3, fill=-1.0).flatten().tolist()
    assert got == [0, 1, 2, 10, 11, 12, 3, 4, -1, 13, 14, -1]


def test_image_grid_is_the_grid_of_the_display_values() -> None:
    images = torch.randn(5, 3, 4, 4) * 3
    expected = make_grid(((images + 2) / 4).clamp(0, 1), nrow=2)
    torch.testing.assert_close(image_grid(images, nrow=2, value_range=(-2.0, 2.0)), expected)
    torch.testing.assert_close(to_display(images, (-2.0, 2.0)), ((images + 2) / 4).clamp(0, 1))


def test_value_range_is_a_pair_of_finite_increasing_numbers() -> None:
    assert check_value_range((0, 255)) == (0.0, 255.0)
    for bad, error in (
        ((1.0, 1.0), ValueError),
        ((0.0, 1.0, 2.0), ValueError),
        ((float("-inf"), 1.0), ValueError),
        ((True, 2.0), TypeError),
        (1.0, TypeError),
        ("ab", TypeError),
    ):
        with pytest.raises(error, match="value_range"):
            check_value_range(bad)
