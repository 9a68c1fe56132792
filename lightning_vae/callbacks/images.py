"""The image views, by their earlier module: each callback now lives in its own file.

:class:`~lightning_vae.callbacks.ReconstructionLogger` (``reconstructions.py``),
:class:`~lightning_vae.callbacks.PriorSampleLogger` (``prior_samples.py``) and
:class:`~lightning_vae.callbacks.LatentTraversalLogger` (``traversals.py``) share
:class:`~lightning_vae.callbacks.image_view.ImageView`; grids, PNG encoding and writing to loggers
are in :mod:`lightning_vae.viz`. The names below keep imports from this module working.
"""

from __future__ import annotations

from lightning_vae.callbacks.batches import unpack_data
from lightning_vae.callbacks.image_view import ImageView
from lightning_vae.callbacks.prior_samples import PriorSampleLogger
from lightning_vae.callbacks.reconstructions import ReconstructionLogger
from lightning_vae.callbacks.traversals import LatentTraversalLogger
from lightning_vae.viz import encode_png, find_tensorboard, image_summary, interleave_rows, make_grid, to_display

__all__ = [
    "ImageView",
    "LatentTraversalLogger",
    "PriorSampleLogger",
    "ReconstructionLogger",
    "encode_png",
    "find_tensorboard",
    "image_summary",
    "interleave_rows",
    "make_grid",
    "to_display",
    "unpack_data",
]
