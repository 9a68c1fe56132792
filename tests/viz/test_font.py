"""The pixel font (viz/font.py): one 3x5 glyph per character one blank column apart, capitals as small letters, a
question mark for the rest, every glyph distinct, and whole-pixel scaling."""

from __future__ import annotations

import string

import torch

from lightning_vae.viz.font import GLYPH_HEIGHT, GLYPH_WIDTH, text_mask


def test_font_draws_known_glyphs_and_a_question_mark_for_others() -> None:
    assert text_mask("").shape == (5, 0)
    assert text_mask("ab", scale=2).shape == (10, 14)
    torch.testing.assert_close(text_mask("Z"), text_mask("z"))  # capitals as small letters
    torch.testing.assert_close(text_mask("é"), text_mask("?"))
    assert not torch.equal(text_mask("z"), text_mask("2"))


def test_text_is_its_glyphs_side_by_side_one_blank_column_apart() -> None:
    text = "kl_z2"
    mask = text_mask(text)
    assert mask.dtype == torch.bool and mask.shape == (GLYPH_HEIGHT, (GLYPH_WIDTH + 1) * len(text) - 1) == (5, 19)
    for i, char in enumerate(text):
        start = (GLYPH_WIDTH + 1) * i
        torch.testing.assert_close(mask[:, start : start + GLYPH_WIDTH], text_mask(char))
        if i:
            assert not mask[:, start - 1].any()  # the blank column before each glyph but the first


def test_every_known_character_has_its_own_glyph() -> None:
    known = string.digits + string.ascii_lowercase + "_-./:"
    glyphs = {char: text_mask(char) for char in known}
    assert all(g.shape == (GLYPH_HEIGHT, GLYPH_WIDTH) for g in glyphs.values())
    assert all(g.any() for g in glyphs.values())  # every known character leaves ink
    distinct = {tuple(g.flatten().tolist()) for g in glyphs.values()}
    assert len(distinct) == len(known)  # no two characters look alike
    assert tuple(text_mask("?").flatten().tolist()) not in distinct
    assert not text_mask(" ").any()


def test_scaling_repeats_every_pixel() -> None:
    for scale in (1, 2, 3):
        mask = text_mask("a1", scale)
        expected = torch.kron(text_mask("a1").int(), torch.ones(scale, scale, dtype=torch.int)).bool()
        assert torch.equal(mask, expected)
