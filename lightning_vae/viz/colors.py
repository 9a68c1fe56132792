"""Colour maps and value images: viridis, the KL-per-dimension heat map, a bar chart of values per dimension."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_vae.viz.font import GLYPH_HEIGHT, text_mask

__all__ = ["NAN_COLOR", "VIRIDIS", "bar_chart", "colorize", "kl_heatmap", "kl_heatmap_caption", "labelled_heatmap"]

#: Anchors of the viridis colour map (dark blue -> green -> yellow), interpolated linearly.
VIRIDIS = (
    (68, 1, 84),
    (72, 40, 120),
    (59, 82, 139),
    (44, 114, 142),
    (33, 145, 140),
    (39, 173, 129),
    (94, 201, 98),
    (170, 220, 50),
    (253, 231, 37),
)
#: Colour of values that are NaN (red, outside viridis).
NAN_COLOR = (228, 26, 28)


def colorize(values: Tensor) -> Tensor:
    """Map values in ``[0, 1]`` of any shape ``S`` to viridis RGB colours ``(3, *S)`` in ``[0, 1]``.

    Values outside ``[0, 1]`` are clipped; NaN is drawn in :data:`NAN_COLOR`.

    Example::

        >>> import torch
        >>> colorize(torch.tensor([0.0, 1.0, float("nan")])).mul(255).round().T
        tensor([[ 68.,   1.,  84.],
                [253., 231.,  37.],
                [228.,  26.,  28.]])
    """
    anchors = torch.tensor(VIRIDIS, dtype=torch.float32, device=values.device) / 255.0
    values = values.float()
    nan = values.isnan()
    pos = values.nan_to_num(0.0).clamp(0.0, 1.0) * (len(VIRIDIS) - 1)
    low = pos.floor().long().clamp(max=len(VIRIDIS) - 2)
    frac = (pos - low.float()).unsqueeze(-1)
    rgb = anchors[low] * (1.0 - frac) + anchors[low + 1] * frac
    rgb[nan] = torch.tensor(NAN_COLOR, dtype=torch.float32, device=values.device) / 255.0
    return rgb.movedim(-1, 0)


def kl_heatmap(
    history: Tensor,
    floor: float = 1e-3,
    cell: int = 12,
    max_side: int = 960,
    groups: Sequence[tuple[str, int]] | None = None,
) -> tuple[Tensor, float]:
    """Render the KL per dimension over checks as an RGB image a person can read at a glance.

    Rows are latent dimensions (dimension 0 at the top), columns are checks (the first at the
    left); the colour is ``log10`` of the KL between ``floor`` (dark) and the largest finite value
    seen (yellow); a NaN KL is red. A colour bar on the right runs from ``floor`` (bottom) to that
    maximum (top), after a white gap. With ``groups`` (name and size of each latent group, in the
    order of the rows), the rows of each group form a band, the bands are separated by white lines
    and each carries its group's name on the left.

    Args:
        history: KL per dimension of each check, ``(T, D)`` in nats.
        floor: KL shown as the darkest colour (anything lower too).
        cell: Largest side in pixels of one (dimension, check) cell.
        max_side: Largest width or height of the heat map part (cells shrink to 1 pixel, no further).
        groups: ``(name, size)`` of each group, sizes adding up to ``D``; ``None``: one unlabelled block.

    Returns:
        ``(image, vmax)``: the image ``(3, H, W)`` in ``[0, 1]`` and the KL shown as the brightest colour.

    Raises:
        ValueError: For a history that is not a non-empty ``(T, D)`` tensor, or group sizes that do not add up to D.

    Example::

        >>> import torch
        >>> image, vmax = kl_heatmap(torch.tensor([[0.0, 1.0], [0.0, 2.0]]))
        >>> image.shape, vmax
        (torch.Size([3, 24, 38]), 2.0)
        >>> kl_heatmap(torch.tensor([[0.0, 1.0, 3.0]]), groups=[("z2", 1), ("z1", 2)])[0].shape  # names, a line apart
        torch.Size([3, 38, 48])
    """
    if history.dim() != 2 or history.numel() == 0:
        raise ValueError(f"Expected a history of shape (checks, latent dims), got {tuple(history.shape)}")
    steps, dims = history.shape
    if groups is not None and (sum(size for _, size in groups) != dims or any(size < 1 for _, size in groups)):
        raise ValueError(f"Expected `groups` of sizes >= 1 adding up to the {dims} rows of the history, got {groups}")
    history = history.detach().float().cpu()
    finite = history[history.isfinite()]
    vmax = max(float(finite.max()) if finite.numel() else 0.0, 10.0 * floor)
    lo, hi = math.log10(floor), math.log10(vmax)
    scaled = (torch.log10(history.clamp(min=floor)) - lo) / (hi - lo)  # (T, D); NaN stays NaN, inf is clipped
    cell_w = max(1, min(cell, max_side // steps))
    cell_h = max(1, min(cell, max_side // dims))
    grid = scaled.T.repeat_interleave(cell_h, 0).repeat_interleave(cell_w, 1)  # (D*h, T*w)
    bands = [(0, grid.shape[0])]
    if groups is not None:  # white lines between the groups' bands
        grid, bands = _bands(grid, [size * cell_h for _, size in groups])
    height = grid.shape[0]
    bar = torch.linspace(1.0, 0.0, height).unsqueeze(1).expand(height, max(4, cell))
    width = grid.shape[1]
    canvas = torch.cat([grid, torch.zeros(height, 2), bar], dim=1)
    image = colorize(canvas)
    image[:, :, width : width + 2] = 1.0  # white gap between the map and the colour bar
    if groups is not None:
        for (top, rows), (top_next, _) in zip(bands[:-1], bands[1:]):
            image[:, top + rows : top_next, :width] = 1.0
        image = torch.cat([_labels([name for name, _ in groups], bands, height), image], dim=2)
    return image, vmax


#: White rows between the bands of two groups in :func:`kl_heatmap`.
_GROUP_GAP = 2


def _bands(grid: Tensor, heights: list[int]) -> tuple[Tensor, list[tuple[int, int]]]:
    """Split ``grid``'s rows into bands of ``heights`` with :data:`_GROUP_GAP` rows apart: the grid, ``(top, rows)``."""
    pieces, bands, top = [], [], 0
    for i, part in enumerate(torch.split(grid, heights)):
        if i:
            pieces.append(torch.zeros(_GROUP_GAP, grid.shape[1]))
            top += _GROUP_GAP
        pieces.append(part)
        bands.append((top, part.shape[0]))
        top += part.shape[0]
    return torch.cat(pieces), bands


def _labels(names: list[str], bands: list[tuple[int, int]], height: int) -> Tensor:
    """A white column ``(3, height, W)`` with each name in dark pixels at the middle of its band."""
    scale = 2 if min(rows for _, rows in bands) >= 2 * GLYPH_HEIGHT else 1
    masks = [text_mask(name, scale) for name in names]
    width = max(m.shape[1] for m in masks) + 4 * scale
    ink = torch.zeros(height, width, dtype=torch.bool)
    for mask, (top, rows) in zip(masks, bands):
        y = min(max(0, top + (rows - mask.shape[0]) // 2), max(0, height - mask.shape[0]))
        part = mask[: height - y]
        ink[y : y + part.shape[0], scale : scale + part.shape[1]] = part
    dark = torch.tensor(VIRIDIS[0], dtype=torch.float32).view(3, 1, 1) / 255.0
    return torch.where(ink, dark, torch.ones(3, height, width))


def kl_heatmap_caption(
    latent_dim: int,
    steps: Sequence[int],
    vmax: float,
    floor: float = 1e-3,
    groups: Sequence[tuple[str, int]] | None = None,
) -> str:
    """How to read a :func:`kl_heatmap` of ``latent_dim`` rows whose columns are the checks at ``steps``.

    Example::

        >>> kl_heatmap_caption(2, [100, 200], 2.0)  # doctest: +NORMALIZE_WHITESPACE
        'Rows: latent dimensions 0 (top) to 1; columns: validation checks (steps 100 to 200); colour: log KL
        per dimension from 0.001 nats or less (dark) to 2 nats (yellow), colour bar on the right, NaN in red'
        >>> kl_heatmap_caption(3, [100], 2.0, groups=[("z2", 1), ("z1", 2)]).split(" (each")[0]
        'Rows: latent dimensions by group, top to bottom: z2 0 to 0, z1 0 to 1'
    """
    rows = f"latent dimensions 0 (top) to {latent_dim - 1}"
    if groups is not None:
        listed = ", ".join(f"{name} 0 to {size - 1}" for name, size in groups)
        rows = f"latent dimensions by group, top to bottom: {listed} (each group named on the left, white lines apart)"
    return (
        f"Rows: {rows}; columns: validation checks (steps {steps[0]} to "
        f"{steps[-1]}); colour: log KL per dimension from {floor:g} nats or less (dark) to {vmax:.3g} nats (yellow), "
        "colour bar on the right, NaN in red"
    )


def _ink(canvas: Tensor, text: str, x: int, y: int, scale: int) -> None:
    """Draw ``text`` in dark pixels into ``canvas`` ``(3, H, W)`` with its top left corner at ``(x, y)``, clipped."""
    mask = text_mask(text, scale)
    h, w = mask.shape
    y0, x0 = max(0, y), max(0, x)
    y1, x1 = min(canvas.shape[1], y + h), min(canvas.shape[2], x + w)
    if y1 <= y0 or x1 <= x0:
        return
    part = mask[y0 - y : y1 - y, x0 - x : x1 - x]
    dark = torch.tensor(VIRIDIS[0], dtype=torch.float32).view(3, 1, 1) / 255.0
    region = canvas[:, y0:y1, x0:x1]
    canvas[:, y0:y1, x0:x1] = torch.where(part, dark, region)


def labelled_heatmap(
    image: Tensor, latent_dim: int, steps: Sequence[int], vmax: float, floor: float = 1e-3, min_height: int = 192
) -> Tensor:
    """A :func:`kl_heatmap` image with its axes written on it, for a file read without a caption beside it.

    The map is enlarged (nearest neighbour) to at least ``min_height`` pixels; a title names the quantity, the left
    margin the first and last latent dimension, the bottom margin the steps of the first and last check, and the
    colour bar carries its top (``vmax``) and bottom (``floor``) values in nats.

    Example::

        >>> import torch
        >>> image, vmax = kl_heatmap(torch.tensor([[0.0, 1.0], [0.0, 2.0]]))
        >>> labelled_heatmap(image, 2, [99, 199], vmax).shape
        torch.Size([3, 248, 392])
    """
    scale = max(1, math.ceil(min_height / image.shape[1]))
    big = image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    text = 2  # font scale: 6 x 10 pixel glyphs
    glyph_w, glyph_h = 4 * text, (GLYPH_HEIGHT + 2) * text
    left_labels = ["dim 0", f"dim {latent_dim - 1}"]
    right_labels = [f"{vmax:.3g}", f"{floor:g}"]
    left = max(len(t) for t in left_labels) * glyph_w + 2 * text
    right = max(len(t) for t in right_labels) * glyph_w + 2 * text
    title, axis = "kl per dimension in nats", f"checks: steps {steps[0]} to {steps[-1]}"
    top, bottom = 2 * glyph_h, 2 * glyph_h
    height = big.shape[1] + top + bottom
    width = max(big.shape[2] + left + right, max(len(title), len(axis)) * glyph_w + 2 * text)
    canvas = torch.ones(3, height, width)
    canvas[:, top : top + big.shape[1], left : left + big.shape[2]] = big
    _ink(canvas, title, text, text * 2, text)
    _ink(canvas, left_labels[0], text, top, text)
    _ink(canvas, left_labels[1], text, top + big.shape[1] - GLYPH_HEIGHT * text, text)
    _ink(canvas, axis, text, top + big.shape[1] + text * 2, text)
    _ink(canvas, right_labels[0], left + big.shape[2] + 2 * text, top, text)
    _ink(canvas, right_labels[1], left + big.shape[2] + 2 * text, top + big.shape[1] - GLYPH_HEIGHT * text, text)
    return canvas


def bar_chart(values: Tensor, bar_width: int = 8, height: int = 64, gap: int = 2) -> tuple[Tensor, float]:
    """A bar chart of non-negative values ``(D,)`` as an RGB image: one dark bar per value on white.

    Bars rise from the bottom in proportion to the value over the largest finite value (which
    reaches the top); a NaN is a full-height red bar, an infinite value a full-height bar.

    Returns:
        ``(image, vmax)``: the image ``(3, height, D * (bar_width + gap) + gap)`` and the value at full height.

    Raises:
        ValueError: For values that are not a non-empty vector, or non-positive sizes.

    Example::

        >>> import torch
        >>> image, vmax = bar_chart(torch.tensor([1.0, 2.0]), bar_width=2, height=4, gap=1)
        >>> image.shape, vmax, (image[0, :, 1] < 1).tolist()  # the first bar reaches half way up
        (torch.Size([3, 4, 7]), 2.0, [False, False, True, True])
    """
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"Expected a vector of values (D,), got shape {tuple(values.shape)}")
    if bar_width <= 0 or height <= 0 or gap < 0:
        raise ValueError(f"Expected positive bar_width and height and gap >= 0, got {bar_width}, {height}, {gap}")
    values = values.detach().float().cpu()
    finite = values[values.isfinite()]
    vmax = float(finite.max()) if finite.numel() and float(finite.max()) > 0 else 1.0
    fraction = (values / vmax).nan_to_num(1.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    bars = (fraction * height).round().long()  # pixels filled from the bottom
    image = torch.ones(3, height, values.numel() * (bar_width + gap) + gap)
    dark = torch.tensor(VIRIDIS[0], dtype=torch.float32) / 255.0
    red = torch.tensor(NAN_COLOR, dtype=torch.float32) / 255.0
    for d in range(values.numel()):
        left = gap + d * (bar_width + gap)
        filled = int(bars[d])
        if filled:
            colour = red if bool(values[d].isnan()) else dark
            image[:, height - filled :, left : left + bar_width] = colour.view(3, 1, 1)
    return image, vmax
