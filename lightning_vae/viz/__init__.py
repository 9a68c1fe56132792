"""Rendering for the views of a VAE: images, grids, colour maps, writing to loggers (no model is called here).

What the views compute from a model lives in :mod:`lightning_vae.callbacks.views`.

- :mod:`~lightning_vae.viz.png`: PNG encoding without Pillow (:func:`encode_png`, :func:`write_png`);
- :mod:`~lightning_vae.viz.grid`: image grids (:func:`make_grid`, :func:`image_grid`, :func:`interleave_rows`,
  :func:`to_display`);
- :mod:`~lightning_vae.viz.projector`: the files of TensorBoard's embedding projector
  (:func:`write_projector_embedding`);
- :mod:`~lightning_vae.viz.colors`: the viridis colour map, the KL heat map, bar charts;
- :mod:`~lightning_vae.viz.font`: a 3x5 pixel font for labels drawn into images;
- :mod:`~lightning_vae.viz.summaries`: TensorBoard summaries built here (:func:`image_summary`, HPARAMS sessions);
- :mod:`~lightning_vae.viz.loggers`: what kind of logger takes a view and where its files go;
- :mod:`~lightning_vae.viz.writers`: writing images and values through any logger (:class:`ViewWriter`), and the
  TensorBoard writer of a trainer (:func:`find_tensorboard`).
"""

from lightning_vae.viz.colors import (
    NAN_COLOR,
    VIRIDIS,
    bar_chart,
    colorize,
    kl_heatmap,
    kl_heatmap_caption,
    labelled_heatmap,
)
from lightning_vae.viz.grid import check_value_range, image_grid, interleave_rows, is_image, make_grid, to_display
from lightning_vae.viz.loggers import logger_folder, logger_kind, tag_path
from lightning_vae.viz.png import encode_png, to_uint8, write_png
from lightning_vae.viz.projector import write_projector_embedding
from lightning_vae.viz.summaries import image_summary, session_end_summary, session_start_summary
from lightning_vae.viz.writers import (
    ViewWriter,
    add_summary,
    disable_default_hp_metric,
    find_tensorboard,
    find_tensorboard_logger,
)

__all__ = [
    "NAN_COLOR",
    "VIRIDIS",
    "ViewWriter",
    "add_summary",
    "bar_chart",
    "check_value_range",
    "colorize",
    "disable_default_hp_metric",
    "encode_png",
    "find_tensorboard",
    "find_tensorboard_logger",
    "image_grid",
    "image_summary",
    "interleave_rows",
    "is_image",
    "kl_heatmap",
    "kl_heatmap_caption",
    "labelled_heatmap",
    "logger_folder",
    "logger_kind",
    "make_grid",
    "session_end_summary",
    "session_start_summary",
    "tag_path",
    "to_display",
    "to_uint8",
    "write_png",
    "write_projector_embedding",
]
