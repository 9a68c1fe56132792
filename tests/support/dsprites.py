"""A small dSprites file of the official layout, for the data module's and the metrics' tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lightning_vae.data.dsprites import FILE_NAME
from lightning_vae.data.shapes import FACTOR_SIZES, render_shapes

#: The factor sizes of the small file: colour 1, shape 3, scale 2, orientation 4, x 3, y 2 (144 images).
SMALL_SIZES = (1, 3, 2, 4, 3, 2)


def small_grid(sizes: tuple[int, ...] = SMALL_SIZES) -> np.ndarray:
    """Every combination of ``sizes`` in C order, ``(N, 6)`` int64: the official ``latents_classes`` layout."""
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1).astype(np.int64)


def small_images(classes: np.ndarray, sizes: tuple[int, ...], side: int = 64) -> np.ndarray:
    """Binary images ``(N, side, side)`` uint8 of each row of ``classes``, drawn by the shapes renderer."""
    shapes_factors = np.stack(
        [classes[:, k + 1] * (FACTOR_SIZES[k] // sizes[k + 1]) for k in range(5)], axis=1
    )  # spread the small grid over the shapes grid
    return render_shapes(torch.from_numpy(shapes_factors), side)[:, 0].numpy().astype(np.uint8)


def write_small_dsprites(folder: Path, sizes: tuple[int, ...] = SMALL_SIZES, side: int = 64, **overrides) -> Path:
    """Write ``FILE_NAME`` in ``folder`` with the official keys (``imgs``, ``latents_classes``, ``latents_values``
    and a pickled ``metadata`` dictionary); ``overrides`` replace or add arrays (``None`` drops one)."""
    folder.mkdir(parents=True, exist_ok=True)
    classes = small_grid(sizes)
    arrays = {
        "imgs": small_images(classes, sizes, side),
        "latents_classes": classes,
        "latents_values": classes.astype(np.float64) / 10,
        "metadata": np.array({"latents_sizes": np.array(sizes), "title": "small dSprites"}, dtype=object),
    }
    arrays.update(overrides)
    path = folder / FILE_NAME
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return path
