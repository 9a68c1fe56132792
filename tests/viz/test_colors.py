"""kl_heatmap and colorize (viz/colors.py): brighter cells for larger KL, the viridis end points, the gap before the
colour bar."""

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
