"""kl_heatmap and colorize (viz/colors.py): brighter cells for larger KL, the viridis end points, the gap before the
colour bar, the bands and names of latent groups."""

from __future__ import annotations

import pytest
import torch

from lightning_vae.viz import colorize, kl_heatmap


def test_heatmap_colours_follow_the_kl():
    history = torch.tensor([[0.0, 0.5, 3.0], [0.001, 1.0, 3.0]])
    image, vmax = kl_heatmap(history, cell=4)
    assert vmax == 3.0 and image.shape == (3, 12, 2 * 4 + 2 + 4)
    brightness = image.sum(0)
    dims = [brightness[4 * d, 0].item() for d in range(3)]
    assert dims[0] < dims[1] < dims[2]  # higher KL, brighter (viridis goes dark to yellow)
    torch.testing.assert_close(
        colorize(torch.tensor([0.0, 1.0])).T * 255, torch.tensor([[68.0, 1, 84], [253, 231, 37]])
    )
    assert torch.all(image[:, :, 8:10] == 1.0)  # the white gap before the colour bar
    with pytest.raises(ValueError, match="history"):
        kl_heatmap(torch.zeros(0, 3))


def test_heatmap_by_group_has_a_band_per_group_a_white_line_between_and_the_names() -> None:
    history = torch.tensor([[0.0, 0.5, 3.0], [0.001, 1.0, 3.0]])
    plain, vmax = kl_heatmap(history, cell=4)
    image, grouped_vmax = kl_heatmap(history, cell=4, groups=[("z2", 1), ("z1", 2)])
    label = image.shape[2] - plain.shape[2]  # the names' column on the left
    assert grouped_vmax == vmax and image.shape[1] == plain.shape[1] + 2 and label > 0
    torch.testing.assert_close(image[:, :4, label : label + 8], plain[:, :4, :8])  # z2: the plain map's first row
    torch.testing.assert_close(image[:, 6:, label : label + 8], plain[:, 4:, :8])  # z1's rows, after the line
    assert torch.all(image[:, 4:6, label : label + 8] == 1.0)  # the white line between the groups
    ink = image[:, :, :label].sum(0) < 1.5  # dark pixels of the names
    assert ink[:4].any() and ink[6:].any()  # each band carries its name (scale 1: bands under 10 pixels)
    columns = ink.any(dim=0).tolist()  # a margin, two glyphs of 3 columns one apart, a margin
    assert columns == [False, True, True, True, False, True, True, True, False, False, False]
    for bad in ([("z", 2)], [("a", 3), ("b", 0)]):
        with pytest.raises(ValueError, match="adding up to the 3 rows"):
            kl_heatmap(history, groups=bad)
