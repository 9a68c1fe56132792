"""``lightning_vae.callbacks.images`` keeps the earlier import path of the image views and their drawing functions."""

from __future__ import annotations

import lightning_vae.callbacks.images as images
from lightning_vae import callbacks, viz
from lightning_vae.callbacks import image_view


def test_the_earlier_names_are_the_callbacks_and_the_viz_functions() -> None:
    for name in ("LatentTraversalLogger", "PriorSampleLogger", "ReconstructionLogger"):
        assert getattr(images, name) is getattr(callbacks, name)
    for name in ("encode_png", "find_tensorboard", "image_summary", "interleave_rows", "make_grid", "to_display"):
        assert getattr(images, name) is getattr(viz, name)
    assert images.ImageView is image_view.ImageView and images.unpack_data is image_view.unpack_data
    assert all(hasattr(images, name) for name in images.__all__)
