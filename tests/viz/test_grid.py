"""make_grid and interleave_rows against a grid laid out cell by cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.images import reference_grid

from lightning_vae.viz import interleave_rows, make_grid


@pytest.mark.parametrize(("n", "nrow", "padding"), [(1, 8, 2), (5, 3, 1), (8, 4, 0), (7, 7, 3), (10, 4, 2)])
def test_make_grid_places_each_image_in_its_cell(n: int, nrow: int, padding: int) -> None:
    images = torch.rand(n, 3, 5, 6)
    got = make_grid(images, nrow=nrow, padding=padding, pad_value=0.25)
    np.testing.assert_array_equal(got.numpy(), reference_grid(images.numpy(), nrow, padding, 0.25))


def test_make_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"images of shape \(N, C, H, W\), got \(3, 4, 4\)"):
        make_grid(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="`nrow` to be a positive int, got 0"):
        make_grid(torch.rand(2, 1, 4, 4), nrow=0)
    with pytest.raises(ValueError, match="`padding` to be an int >= 0, got -1"):
        make_grid(torch.rand(2, 1, 4, 4), padding=-1)


def test_interleave_rows_alternates_rows_of_inputs_and_outputs() -> None:
    x, y = torch.arange(5.0).view(5, 1, 1, 1), 10 + torch.arange(5.0).view(5, 1, 1, 1)
    got = interleave_rows(x, y, nrow=3, fill=-1.0).flatten().tolist()
    assert got == [0, 1, 2, 10, 11, 12, 3, 4, -1, 13, 14, -1]
