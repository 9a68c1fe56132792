"""PNG encoding in pure Python (zlib and NumPy, no Pillow): 8-bit grey, grey + alpha, RGB and RGBA."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["encode_png", "to_uint8", "write_png"]

_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # grey, grey + alpha, RGB, RGBA (PNG spec, IHDR colour type)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """An image as a ``uint8`` array ``(H, W, C)``: a float tensor ``(C, H, W)`` in [0, 1] is scaled and rounded.

    Values outside [0, 1] are clipped and NaN becomes 0 (black), so a diverged model still gives a
    readable image.

    Example::

        >>> import torch
        >>> to_uint8(torch.tensor([[[0.0, 0.5, float("nan"), 2.0]]]))[..., 0]
        array([[  0, 128,   0, 255]], dtype=uint8)
    """
    if isinstance(image, Tensor):
        if image.dim() != 3:
            raise ValueError(f"Expected a tensor image of shape (C, H, W), got {tuple(image.shape)}")
        scaled = image.detach().float().cpu().nan_to_num(0.0).clamp(0, 1) * 255.0 + 0.5
        return scaled.to(torch.uint8).permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in _COLOR_TYPES:
        raise ValueError(
            f"Expected a uint8 array (H, W, C) with C in (1, 2, 3, 4), got dtype {array.dtype} and shape {array.shape}"
        )
    return array


def encode_png(image: Tensor | np.ndarray, compress_level: int = 6) -> bytes:
    """Encode one image as PNG bytes: 8-bit grey, grey + alpha, RGB or RGBA, no interlacing, filter 0 on every row.

    Args:
        image: A float tensor ``(C, H, W)`` in [0, 1], or a ``uint8`` array ``(H, W, C)`` or ``(H, W)``.
        compress_level: zlib level 0-9.

    Raises:
        ValueError: For an array of another dtype or shape, or an empty image.

    Example::

        >>> import torch
        >>> png = encode_png(torch.rand(3, 4, 5))
        >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", png[16:24] == (5).to_bytes(4, "big") + (4).to_bytes(4, "big")
        (True, True)
    """
    array = to_uint8(image)
    height, width, channels = array.shape
    if height == 0 or width == 0:
        raise ValueError(f"Expected a non-empty image, got shape {array.shape}")
    rows = np.concatenate([np.zeros((height, 1), np.uint8), array.reshape(height, width * channels)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(np.ascontiguousarray(rows).tobytes(), compress_level)),
            _png_chunk(b"IEND", b""),
        )
    )


def write_png(path: str | os.PathLike, image: Tensor | np.ndarray) -> Path:
    """Write ``image`` (as :func:`encode_png` takes it) to ``path`` as PNG, creating folders; return the path.

    Example::

        >>> import tempfile, torch
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     write_png(f"{folder}/a/b.png", torch.zeros(1, 2, 3)).read_bytes()[:4]
        b'\\x89PNG'
    """
    data = encode_png(image)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target
