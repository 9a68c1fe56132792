"""The shapes data set: deterministic, factors change the image as named, arguments checked."""

from __future__ import annotations

import pytest
import torch

from lightning_vae.data import (
    ShapesDataModule,
    ShapesDataset,
    render_shapes,
)


def test_shapes_are_deterministic_and_carry_factors() -> None:
    a, b, c = ShapesDataset(50, 32, seed=3), ShapesDataset(50, 32, seed=3), ShapesDataset(50, 32, seed=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    x, f = a[7]
    assert x.shape == (1, 32, 32) and set(x.unique().tolist()) <= {0.0, 1.0} and f.shape == (5,)
    assert torch.equal(render_shapes(f.unsqueeze(0), 32)[0].float(), x)


def test_shapes_factors_change_the_image_as_named() -> None:
    base = torch.tensor([[0, 5, 0, 10, 10]])
    img = render_shapes(base, 64)[0, 0].float()
    moved = render_shapes(torch.tensor([[0, 5, 0, 25, 10]]), 64)[0, 0].float()
    bigger_area = render_shapes(torch.tensor([[0, 5, 0, 10, 10]]), 64).sum()
    smaller_area = render_shapes(torch.tensor([[0, 0, 0, 10, 10]]), 64).sum()
    cols = torch.arange(64).float()
    assert (moved.sum(0) * cols).sum() / moved.sum() > (img.sum(0) * cols).sum() / img.sum() + 10  # pos_x moves right
    assert bigger_area > 3 * smaller_area  # scale 1.0 vs 0.5: four times the area
    shapes = render_shapes(torch.tensor([[s, 5, 0, 16, 16] for s in range(3)]), 64)
    assert len({tuple(s.flatten().tolist()) for s in shapes}) == 3


def test_shapes_datamodule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`image_size` to be one of"):
        ShapesDataModule(image_size=48)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`n_train` to be an int >= 1, got 0"):
        ShapesDataModule(n_train=0)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: ShapesDataModule(image_size="32"), TypeError, r"`image_size` to be an int, got '32'"),
        (lambda: ShapesDataModule(batch_size=2.0), TypeError, r"`batch_size` to be an int, got 2.0"),
        (lambda: ShapesDataModule(num_workers=-1), ValueError, r"`num_workers` to be an int >= 0, got -1"),
        (lambda: ShapesDataset(0), ValueError, r"`n` to be an int >= 1, got 0"),
        (lambda: ShapesDataset(4, image_size=48), ValueError, r"`image_size` to be one of \(28, 32, 64\), got 48"),
    ],
)
def test_datamodule_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()
