"""Files of TensorBoard's embedding projector: points, their labels and a sprite of thumbnails, without Pillow.

The projector reads ``projector_config.pbtxt`` in a run's log folder; each entry names a tensor
file (TSV), a metadata file (TSV) and a sprite (one PNG tiling all thumbnails, written with
:func:`~lightning_vae.viz.png.encode_png`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_vae.checks import check_type
from lightning_vae.viz.grid import make_grid
from lightning_vae.viz.png import encode_png

__all__ = ["MAX_SPRITE_SIDE", "write_projector_embedding"]

#: TensorBoard's projector refuses sprites larger than this many pixels per side.
MAX_SPRITE_SIDE = 8192


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def write_projector_embedding(
    log_dir: str | os.PathLike,
    tag: str,
    step: int,
    vectors: Tensor,
    metadata: Tensor | None = None,
    metadata_header: Sequence[str] | None = None,
    thumbnails: Tensor | None = None,
) -> str:
    """Write one embedding for the projector under ``log_dir/<step>/<tag>/`` and register it; return that folder.

    Args:
        log_dir: The run's TensorBoard folder.
        tag: Name of the embedding (its tensor shows as ``<tag>:<step>``).
        step: Global step the embedding belongs to.
        vectors: The points ``(N, D)``.
        metadata: One label ``(N,)`` or several columns ``(N, K)`` per point.
        metadata_header: Column names for ``(N, K)`` metadata (default ``factor_0``, ...).
        thumbnails: Images ``(N, C, H, W)`` in [0, 1] tiled into the sprite.

    Raises:
        TypeError: If ``vectors`` is not a tensor.
        ValueError: If the shapes disagree, a header does not match the metadata columns, or the sprite
            would be larger than the projector takes (:data:`MAX_SPRITE_SIDE`).

    Example::

        >>> import os, tempfile, torch
        >>> with tempfile.TemporaryDirectory() as log_dir:
        ...     folder = write_projector_embedding(log_dir, "latent/mean", 7, torch.zeros(4, 2), torch.arange(4))
        ...     sorted(os.listdir(folder)), sorted(os.listdir(log_dir))
        (['metadata.tsv', 'tensors.tsv'], ['00007', 'projector_config.pbtxt'])
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    if check_type("vectors", vectors, Tensor, "a tensor").dim() != 2:
        raise ValueError(f"Expected `vectors` of shape (N, D), got {tuple(vectors.shape)}")
    n = vectors.shape[0]
    folder = os.path.join(f"{step:05d}", re.sub(r"[^\w.-]+", "_", tag))
    target = os.path.join(log_dir, folder)
    os.makedirs(target, exist_ok=True)
    np.savetxt(os.path.join(target, "tensors.tsv"), vectors.detach().double().cpu().numpy(), delimiter="\t", fmt="%.6g")

    config = ProjectorConfig()
    config_path = os.path.join(log_dir, "projector_config.pbtxt")
    if os.path.exists(config_path):
        with open(config_path) as f:
            text_format.Parse(f.read(), config)
    name = f"{tag}:{step:05d}"
    kept = [e for e in config.embeddings if e.tensor_name != name]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    entry = config.embeddings.add()
    entry.tensor_name = name
    entry.tensor_path = f"{folder}/tensors.tsv".replace(os.sep, "/")

    if metadata is not None:
        meta = metadata.detach().cpu().double()
        if meta.shape[0] != n or meta.dim() not in (1, 2):
            raise ValueError(f"Expected `metadata` of shape ({n},) or ({n}, K), got {tuple(meta.shape)}")
        lines = []
        if meta.dim() == 2 and meta.shape[1] > 1:
            header = (
                list(metadata_header) if metadata_header is not None else [f"factor_{i}" for i in range(meta.shape[1])]
            )
            if len(header) != meta.shape[1]:
                raise ValueError(f"Expected `metadata_header` with {meta.shape[1]} names, got {list(header)}")
            lines.append("\t".join(header))
        for row in meta.reshape(n, -1).tolist():
            lines.append("\t".join(_format(v) for v in row))
        with open(os.path.join(target, "metadata.tsv"), "w") as f:
            f.write("\n".join(lines) + "\n")
        entry.metadata_path = f"{folder}/metadata.tsv".replace(os.sep, "/")

    if thumbnails is not None:
        if thumbnails.dim() != 4 or thumbnails.shape[0] != n:
            raise ValueError(f"Expected `thumbnails` of shape ({n}, C, H, W), got {tuple(thumbnails.shape)}")
        side = math.ceil(math.sqrt(n))
        h, w = thumbnails.shape[2:]
        if side * max(h, w) > MAX_SPRITE_SIDE:
            raise ValueError(
                f"A sprite of {n} thumbnails of {h}x{w} would be {side * w}x{side * h} pixels; the projector takes "
                f"at most "
                f"{MAX_SPRITE_SIDE}x{MAX_SPRITE_SIDE} (log fewer points or smaller thumbnails)"
            )
        # A square of side x side cells, row by row, as the projector's sprite format describes.
        cells = torch.zeros(side * side, *thumbnails.shape[1:])
        cells[:n] = thumbnails.float().cpu()
        sprite = make_grid(cells, nrow=side, padding=0)
        with open(os.path.join(target, "sprite.png"), "wb") as f:
            f.write(encode_png(sprite))
        entry.sprite.image_path = f"{folder}/sprite.png".replace(os.sep, "/")
        entry.sprite.single_image_dim.extend([w, h])

    with open(config_path, "w") as f:
        f.write(text_format.MessageToString(config))
    return target
