"""A 3x5 pixel font for short labels drawn into images (group names on the KL heat map), with no font library."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GLYPH_HEIGHT", "GLYPH_WIDTH", "text_mask"]

GLYPH_WIDTH, GLYPH_HEIGHT = 3, 5

# Each glyph: five rows of three pixels, top to bottom ("1" is ink). Capitals are drawn as the small letters
# (a small z, apart from the 2).
_GLYPHS = {
    "0": "111 101 101 101 111", "1": "010 110 010 010 111", "2": "111 001 111 100 111", "3": "111 001 111 001 111",
    "4": "101 101 111 001 001", "5": "111 100 111 001 111", "6": "111 100 111 101 111", "7": "111 001 001 001 001",
    "8": "111 101 111 101 111", "9": "111 101 111 001 111", "a": "010 101 111 101 101", "b": "110 101 110 101 110",
    "c": "011 100 100 100 011", "d": "110 101 101 101 110", "e": "111 100 110 100 111", "f": "111 100 110 100 100",
    "g": "011 100 101 101 011", "h": "101 101 111 101 101", "i": "111 010 010 010 111", "j": "001 001 001 101 010",
    "k": "101 101 110 101 101", "l": "100 100 100 100 111", "m": "101 111 111 101 101", "n": "110 101 101 101 101",
    "o": "010 101 101 101 010", "p": "110 101 110 100 100", "q": "010 101 101 110 011", "r": "110 101 110 101 101",
    "s": "011 100 010 001 110", "t": "111 010 010 010 010", "u": "101 101 101 101 111", "v": "101 101 101 101 010",
    "w": "101 101 111 111 101", "x": "101 101 010 101 101", "y": "101 101 010 010 010", "z": "000 111 001 010 111",
    "_": "000 000 000 000 111", "-": "000 000 111 000 000", ".": "000 000 000 000 010", "/": "001 001 010 100 100",
    ":": "000 010 000 010 000", " ": "000 000 000 000 000", "?": "111 001 010 000 010",
}  # fmt: skip


def _glyph(char: str) -> Tensor:
    rows = _GLYPHS.get(char.lower(), _GLYPHS["?"]).split()
    return torch.tensor([[c == "1" for c in row] for row in rows], dtype=torch.bool)


def text_mask(text: str, scale: int = 1) -> Tensor:
    """The pixels of ``text`` as a boolean mask ``(5 * scale, (4 * len(text) - 1) * scale)`` (one blank column apart).

    Letters, digits and ``_-./:`` have glyphs (capitals drawn as small letters); any other character is ``?``.

    Example::

        >>> text_mask("z1").int()
        tensor([[0, 0, 0, 0, 0, 1, 0],
                [1, 1, 1, 0, 1, 1, 0],
                [0, 0, 1, 0, 0, 1, 0],
                [0, 1, 0, 0, 0, 1, 0],
                [1, 1, 1, 0, 1, 1, 1]], dtype=torch.int32)
    """
    if not text:
        return torch.zeros(GLYPH_HEIGHT * scale, 0, dtype=torch.bool)
    blank = torch.zeros(GLYPH_HEIGHT, 1, dtype=torch.bool)
    parts: list[Tensor] = []
    for i, char in enumerate(text):
        if i:
            parts.append(blank)
        parts.append(_glyph(char))
    mask = torch.cat(parts, dim=1)
    return mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
