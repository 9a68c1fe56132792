"""Image grids: tile a batch into one image, interleave inputs with outputs, map data values to display range."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_vae.checks import check_float, check_int, check_type

__all__ = ["check_value_range", "image_grid", "interleave_rows", "is_image", "make_grid", "to_display"]


def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile images ``(N, C, H, W)`` into one image ``(C, H', W')``, ``nrow`` images per row, row by row.

    Empty cells of the last row and the borders are filled with ``pad_value``.

    Example::

        >>> import torch
        >>> make_grid(torch.zeros(5, 1, 4, 4), nrow=3, padding=1).shape  # 2 rows of 3 cells of 5x5, plus a border
        torch.Size([1, 11, 16])
    """
    if check_type("images", images, Tensor, "a tensor").dim() != 4:
        raise ValueError(f"Expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    check_int("nrow", nrow, low=1)
    check_int("padding", padding, low=0)
    n, c, h, w = images.shape
    cols = min(nrow, max(n, 1))
    rows = max(math.ceil(n / cols), 1)
    cells = images.new_full((rows * cols, c, h + padding, w + padding), pad_value)
    cells[:n, :, padding:, padding:] = images
    grid = cells.view(rows, cols, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + padding), cols * (w + padding))
    out = images.new_full((c, grid.shape[1] + padding, grid.shape[2] + padding), pad_value)
    out[:, : grid.shape[1], : grid.shape[2]] = grid
    return out


def image_grid(images: Tensor, nrow: int = 8, value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Data-space images ``(N, C, H, W)`` as one grid to show: :func:`to_display`, then :func:`make_grid`.

    Example::

        >>> import torch
        >>> image_grid(torch.full((2, 1, 2, 2), 5.0), nrow=2, value_range=(0.0, 10.0)).unique()  # white borders
        tensor([0.5000, 1.0000])
    """
    return make_grid(to_display(images, value_range), nrow=nrow)


def interleave_rows(inputs: Tensor, outputs: Tensor, nrow: int, fill: float = 1.0) -> Tensor:
    """Stack ``nrow``-wide rows alternately from ``inputs`` and ``outputs`` (same shape ``(N, ...)``).

    The result, tiled by :func:`make_grid` with the same ``nrow``, shows each row of inputs with the
    row of their outputs under it; a short last row is filled with ``fill``.

    Example::

        >>> import torch
        >>> interleave_rows(torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2), nrow=2)[:, 0, 0, 0]
        tensor([0., 0., 1., 1., 0., 1., 1., 1.])
    """
    if inputs.shape != outputs.shape:
        raise ValueError(
            f"Expected inputs and outputs of the same shape, got {tuple(inputs.shape)} and {tuple(outputs.shape)}"
        )
    rows = []
    for i in range(0, inputs.shape[0], nrow):
        for part in (inputs[i : i + nrow], outputs[i : i + nrow]):
            rows += [part, part.new_full((nrow - part.shape[0], *part.shape[1:]), fill)]
    return torch.cat(rows)


def to_display(images: Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Map values in ``value_range`` linearly to [0, 1] and clip; the result is float32 on the CPU.

    Example::

        >>> import torch
        >>> to_display(torch.tensor([-2.0, 0.0, 1.0, 3.0]), (-1.0, 1.0))
        tensor([0.0000, 0.5000, 1.0000, 1.0000])
    """
    low, high = value_range
    return ((images.detach().float().cpu() - low) / (high - low)).clamp_(0.0, 1.0)


def is_image(shape: Sequence[int]) -> bool:
    """Whether one example of this shape is an image ``(C, H, W)`` with 1, 3 or 4 channels.

    Example::

        >>> is_image((1, 28, 28)), is_image((784,)), is_image((2, 8, 8))
        (True, False, False)
    """
    return len(shape) == 3 and shape[0] in (1, 3, 4) and shape[1] > 1 and shape[2] > 1


def check_value_range(value_range: Any) -> tuple[float, float]:
    """``value_range`` as a pair of finite floats ``(low, high)`` with ``low < high``.

    Raises:
        TypeError: For something that is not a sequence of numbers.
        ValueError: For a sequence that is not a pair, a bound that is not finite, or ``low >= high``.

    Example::

        >>> check_value_range([-1, 1])
        (-1.0, 1.0)
    """
    what = "a pair (low, high) with low < high"
    if isinstance(value_range, (str, bytes)) or not isinstance(value_range, Sequence):
        raise TypeError(f"Expected `value_range` to be {what}, got {value_range!r}")
    if len(value_range) != 2:
        raise ValueError(f"Expected `value_range` to be {what}, got {value_range!r}")
    low, high = (check_float(f"value_range[{i}]", v) for i, v in enumerate(value_range))
    if not low < high:
        raise ValueError(f"Expected `value_range` to be {what}, got {value_range!r}")
    return low, high
