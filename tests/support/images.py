"""References and a short run for the image tests: a grid laid out cell by cell, a PNG reader written from the
specification, 8-bit rounding, a small VAE on shapes, a small stacked VAE, a fit with image views and its
TensorBoard events."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_vae import VAE
from lightning_vae.data import ShapesDataModule
from lightning_vae.models import StackedVAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder
from support.modules import trainer_kwargs

SIDE, LATENT = 28, 4


def reference_grid(images: np.ndarray, nrow: int, padding: int, pad_value: float) -> np.ndarray:
    """Cell-by-cell placement, written from the layout rule (row-major cells of (H + p) x (W + p) after a p border)."""
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value, dtype=images.dtype)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        out[:, top : top + h, left : left + w] = images[i]
    return out


def decode_png(data: bytes) -> np.ndarray:
    """A PNG reader written from the specification (8-bit, no interlace, filter 0 only), checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and interlace == 0
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, channels)


def quantize(images: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, C) uint8, rounding as any 8-bit image writer does."""
    return np.rint(images.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def small_vae() -> VAE:
    shape = (1, SIDE, SIDE)
    return VAE(MLPEncoder(shape, latent_dim=LATENT, hidden_sizes=(32,)), MLPDecoder(LATENT, shape, hidden_sizes=(32,)))


def stacked_vae() -> VAE:
    """Two latent groups (z2 of 2 above z1 of 4) on 4x4 images, in eval mode."""
    torch.manual_seed(0)
    return VAE(model=StackedVAEModel((1, 4, 4), latent_sizes=(4, 2), hidden_sizes=((8,), (8,)))).eval()


def shapes(n_val: int = 64) -> ShapesDataModule:
    return ShapesDataModule(image_size=SIDE, n_train=128, n_val=n_val, batch_size=32)


def fit(tmp_path: Path, callbacks: list, max_epochs: int = 2, **overrides) -> tuple[Trainer, VAE, ShapesDataModule]:
    model, data = small_vae(), shapes()
    logger = overrides.pop("logger", TensorBoardLogger(tmp_path, name="tb", version=0))
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=max_epochs, logger=logger, callbacks=callbacks, **overrides)
    )
    trainer.fit(model, data)
    return trainer, model, data


def events(trainer: Trainer) -> EventAccumulator:
    accumulator = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def last_image(accumulator: EventAccumulator, tag: str) -> np.ndarray:
    return decode_png(accumulator.Images(tag)[-1].encoded_image_string)
