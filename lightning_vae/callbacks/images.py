"""TensorBoard image views of a VAE: reconstructions beside their inputs, prior samples, latent traversals.

Each view is drawn on global rank zero at the end of a validation epoch (every ``every_n_epochs``),
outside the training step, from fixed inputs so that the images of one run are comparable over
time: the first validation examples seen (captured once) and latent noise drawn from a fixed seed.

Images go to the TensorBoard IMAGES tab through the first ``TensorBoardLogger`` of the trainer. The
PNG encoding is done here (zlib, no Pillow): :func:`make_grid` tiles a batch into one image and
:func:`encode_png` writes it, so the views need nothing beyond torch and tensorboard.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_vae.functional import posterior_mean_variance

__all__ = [
    "LatentTraversalLogger",
    "PriorSampleLogger",
    "ReconstructionLogger",
    "encode_png",
    "find_tensorboard",
    "image_summary",
    "interleave_rows",
    "make_grid",
    "to_display",
]


# ---------------------------------------------------------------------------------------- grids and PNG
def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile images ``(N, C, H, W)`` into one image ``(C, H', W')``, ``nrow`` images per row, row by row.

    Empty cells of the last row and the borders are filled with ``pad_value``.

    Example::

        >>> import torch
        >>> make_grid(torch.zeros(5, 1, 4, 4), nrow=3, padding=1).shape  # 2 rows of 3 cells of 5x5, plus a border
        torch.Size([1, 11, 16])
    """
    if images.dim() != 4:
        raise ValueError(f"Expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow <= 0:
        raise ValueError(f"Expected `nrow` to be a positive int, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"Expected `padding` to be an int >= 0, got {padding!r}")
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
    """Map values in ``value_range`` linearly to [0, 1] and clip; the result is float32 on the CPU."""
    low, high = value_range
    return ((images.detach().float().cpu() - low) / (high - low)).clamp_(0.0, 1.0)


_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # grey, grey + alpha, RGB, RGBA (PNG spec, IHDR colour type)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: Tensor | np.ndarray, compress_level: int = 6) -> bytes:
    """Encode one image as PNG bytes: 8-bit grey, grey + alpha, RGB or RGBA, no interlacing, filter 0 on every row.

    Args:
        image: A float tensor ``(C, H, W)`` in [0, 1], or a ``uint8`` array ``(H, W, C)`` or ``(H, W)``.
        compress_level: zlib level 0-9.

    Example::

        >>> import torch
        >>> png = encode_png(torch.rand(3, 4, 5))
        >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", png[16:24] == (5).to_bytes(4, "big") + (4).to_bytes(4, "big")
        (True, True)
    """
    if isinstance(image, Tensor):
        if image.dim() != 3:
            raise ValueError(f"Expected a tensor image of shape (C, H, W), got {tuple(image.shape)}")
        image = (image.detach().float().cpu().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in _COLOR_TYPES:
        raise ValueError(
            f"Expected a uint8 array (H, W, C) with C in (1, 2, 3, 4), got dtype {array.dtype} and shape {array.shape}"
        )
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


def image_summary(tag: str, image: Tensor) -> Any:
    """A TensorBoard ``Summary`` holding ``image`` ``(C, H, W)`` in [0, 1] as PNG (what ``add_image`` writes)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    c, h, w = image.shape
    png = encode_png(image)
    return Summary(
        value=[Summary.Value(tag=tag, image=Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=png))]
    )


def find_tensorboard(trainer: Trainer) -> Any | None:
    """The ``SummaryWriter`` of the trainer's first ``TensorBoardLogger``, or ``None``."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def unpack_data(pl_module: Any, batch: Any) -> Any:
    """The data of a batch: ``module.unpack_batch(batch)`` when the module has it (as VAE), else the batch itself."""
    unpack = getattr(pl_module, "unpack_batch", None)
    return unpack(batch) if callable(unpack) else batch


def _is_image(shape: Sequence[int]) -> bool:
    return len(shape) == 3 and shape[0] in (1, 3, 4) and shape[1] > 1 and shape[2] > 1


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
    return value


def _check_range(value_range: Any) -> tuple[float, float]:
    if (
        not isinstance(value_range, Sequence)
        or len(value_range) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value_range)
        or not value_range[0] < value_range[1]
    ):
        raise ValueError(f"Expected `value_range` to be a pair (low, high) with low < high, got {value_range!r}")
    return float(value_range[0]), float(value_range[1])


# ---------------------------------------------------------------------------------------- the views
class _ImageView(Callback):
    """Shared plumbing: rank zero, frequency, the TensorBoard writer, the fixed validation examples."""

    #: Module methods the view calls (checked in ``setup``).
    needs: tuple[str, ...] = ()

    def __init__(self, every_n_epochs: int, n_examples: int, value_range: Sequence[float], tag: str) -> None:
        super().__init__()
        self.every_n_epochs = _check_positive_int("every_n_epochs", every_n_epochs)
        self.n_examples = n_examples
        self.value_range = _check_range(value_range)
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"Expected `tag` to be a non-empty string, got {tag!r}")
        self.tag = tag
        self._fixed: Tensor | None = None
        self._warned: set[str] = set()

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(tag=self.tag)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        missing = [name for name in self.needs if not callable(getattr(pl_module, name, None))]
        if missing:
            raise TypeError(
                f"{type(self).__name__} needs a module with {', '.join(f'`{m}`' for m in self.needs)} (as VAE has), "
                f"got {type(pl_module).__name__} without {', '.join(f'`{m}`' for m in missing)}"
            )

    @override
    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # Capture the first validation examples once: a fixed set the images of every epoch are drawn from.
        if self.n_examples == 0 or dataloader_idx != 0 or not trainer.is_global_zero:
            return
        have = 0 if self._fixed is None else self._fixed.shape[0]
        if have >= self.n_examples:
            return
        x = unpack_data(pl_module, batch)
        if not isinstance(x, Tensor):
            self._warn_once("batch", f"{type(self).__name__}: cannot find the data tensor in the batch; nothing logged")
            return
        x = x[: self.n_examples - have].detach().cpu().clone()
        self._fixed = x if self._fixed is None else torch.cat([self._fixed, x])

    def _writer(self, trainer: Trainer) -> Any | None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return None
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return None
        writer = find_tensorboard(trainer)
        if writer is None:
            self._warn_once(
                "logger", f"{type(self).__name__} draws into TensorBoard; the trainer has no TensorBoardLogger"
            )
        return writer

    def _emit(self, writer: Any, trainer: Trainer, tag: str, images: Tensor, nrow: int) -> None:
        """Write ``images`` ``(N, C, H, W)`` in data space as one grid under ``tag`` at the current step."""
        if not _is_image(tuple(images.shape[1:])):
            self._warn_once(
                "shape",
                f"{type(self).__name__}: examples of shape {tuple(images.shape[1:])} are not images (C, H, W) with "
                "C in (1, 3, 4); nothing logged",
            )
            return
        grid = make_grid(to_display(images, self.value_range), nrow=nrow)
        writer._get_file_writer().add_summary(image_summary(tag, grid), trainer.global_step)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        if writer is None:
            return
        with torch.no_grad():
            self.draw(writer, trainer, pl_module)

    def draw(self, writer: Any, trainer: Trainer, pl_module: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ReconstructionLogger(_ImageView):
    """Log reconstructions next to their inputs: rows of inputs, each followed by the row of their reconstructions.

    The inputs are the first ``n_images`` validation examples of the run; a reconstruction is the
    likelihood mean at the posterior mean (``module.reconstruct(x)``).

    Args:
        n_images: Number of examples shown.
        nrow: Examples per row.
        every_n_epochs: Log at the end of every n-th validation epoch.
        value_range: Range of the data mapped to black..white.
        tag: TensorBoard tag of the grid.

    Raises:
        ValueError: For a non-positive count or a bad ``value_range``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[ReconstructionLogger(n_images=16, every_n_epochs=5)], logger=False)
    """

    needs = ("reconstruct",)

    def __init__(
        self,
        n_images: int = 16,
        nrow: int = 8,
        every_n_epochs: int = 1,
        value_range: Sequence[float] = (0.0, 1.0),
        tag: str = "images/reconstructions",
    ) -> None:
        super().__init__(every_n_epochs, _check_positive_int("n_images", n_images), value_range, tag)
        self.nrow = _check_positive_int("nrow", nrow)

    @override
    def draw(self, writer: Any, trainer: Trainer, pl_module: Any) -> None:
        if self._fixed is None:
            return
        x = self._fixed.to(pl_module.device)
        recon = pl_module.reconstruct(x).float().reshape(x.shape)
        self._emit(
            writer, trainer, self.tag, interleave_rows(x.float(), recon, self.nrow, fill=self.value_range[1]), self.nrow
        )


class PriorSampleLogger(_ImageView):
    """Log samples from the prior: z ~ p(z) from a fixed seed, shown as the likelihood mean.

    The same latent noise is drawn at every epoch (``seed``), so the grid shows how the decoder's
    picture of the same points changes during training.

    Args:
        n_images: Number of samples.
        nrow: Samples per row.
        every_n_epochs: Log at the end of every n-th validation epoch.
        seed: Seed of the latent noise (the global random state is left untouched).
        value_range: Range of the data mapped to black..white.
        tag: TensorBoard tag of the grid.

    Raises:
        ValueError: For a non-positive count or a bad ``value_range``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[PriorSampleLogger(n_images=64, seed=0)], logger=False)
    """

    needs = ("sample",)

    def __init__(
        self,
        n_images: int = 64,
        nrow: int = 8,
        every_n_epochs: int = 1,
        seed: int = 0,
        value_range: Sequence[float] = (0.0, 1.0),
        tag: str = "images/samples",
    ) -> None:
        super().__init__(every_n_epochs, 0, value_range, tag)
        self.n_images = _check_positive_int("n_images", n_images)
        self.nrow = _check_positive_int("nrow", nrow)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"Expected `seed` to be an int, got {seed!r}")
        self.seed = seed

    def samples(self, pl_module: Any) -> Tensor:
        """The ``n_images`` samples drawn from the fixed seed, in data space."""
        device = torch.device(pl_module.device)
        devices = (
            [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        )
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return pl_module.sample(self.n_images).float()

    @override
    def draw(self, writer: Any, trainer: Trainer, pl_module: Any) -> None:
        if getattr(pl_module, "autoregressive", False):
            self._warn_once(
                "autoregressive",
                "PriorSampleLogger: the decoder is autoregressive, so each grid costs one decoder pass per pixel",
            )
        self._emit(writer, trainer, self.tag, self.samples(pl_module), self.nrow)


class LatentTraversalLogger(_ImageView):
    """Log latent traversals: for the most active dimensions, one row varying that dimension alone.

    Activity is the variance over the fixed validation examples of the posterior mean of each
    dimension (the statistic of active units, Burda et al. 2015). Each row starts from the
    posterior mean of the first example and sweeps one dimension over ``n_steps`` values evenly
    spaced in ``[-limit, limit]``; the rows are ordered from the most active dimension down, and the
    dimensions shown are written next to the grid as text (``<tag>_dims``).

    Args:
        n_dims: Number of dimensions (rows) shown.
        n_steps: Values per dimension (columns).
        limit: The sweep covers ``[-limit, limit]`` (in units of the standard normal prior).
        n_examples: Validation examples the activity is measured on.
        every_n_epochs: Log at the end of every n-th validation epoch.
        value_range: Range of the data mapped to black..white.
        tag: TensorBoard tag of the grid.

    Raises:
        ValueError: For non-positive counts, ``n_examples < 2``, a non-positive ``limit`` or a bad ``value_range``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[LatentTraversalLogger(n_dims=6, n_steps=9, limit=3.0)], logger=False)
    """

    needs = ("encode", "decode")

    def __init__(
        self,
        n_dims: int = 8,
        n_steps: int = 9,
        limit: float = 3.0,
        n_examples: int = 256,
        every_n_epochs: int = 1,
        value_range: Sequence[float] = (0.0, 1.0),
        tag: str = "images/traversals",
    ) -> None:
        if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 2:
            raise ValueError(f"Expected `n_examples` to be an int >= 2 (a variance needs two), got {n_examples!r}")
        super().__init__(every_n_epochs, n_examples, value_range, tag)
        self.n_dims = _check_positive_int("n_dims", n_dims)
        self.n_steps = _check_positive_int("n_steps", n_steps)
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit < math.inf:
            raise ValueError(f"Expected `limit` to be a positive finite float, got {limit!r}")
        self.limit = float(limit)

    def traversal(self, pl_module: Any, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(images (k * n_steps, *data), dims (k,), activity (D,))`` for examples ``x``; dims by falling activity."""
        means = pl_module.encode(x).mean.float()
        activity = posterior_mean_variance(means).float()
        k = min(self.n_dims, means.shape[-1])
        dims = torch.argsort(activity, descending=True, stable=True)[:k]
        values = torch.linspace(-self.limit, self.limit, self.n_steps, device=means.device)
        z = means[0].repeat(k, self.n_steps, 1)  # (k, steps, D)
        z[torch.arange(k, device=z.device), :, dims] = values.expand(k, -1)
        z = z.reshape(k * self.n_steps, -1)
        params = pl_module.decode(z)
        images = pl_module.likelihood.mean(params) if hasattr(pl_module, "likelihood") else params
        return images.float(), dims, activity

    @override
    def draw(self, writer: Any, trainer: Trainer, pl_module: Any) -> None:
        if self._fixed is None or self._fixed.shape[0] < 2:
            return
        if getattr(pl_module, "autoregressive", False):
            self._warn_once("autoregressive", "LatentTraversalLogger: skipped, the decoder is autoregressive (needs x)")
            return
        images, dims, activity = self.traversal(pl_module, self._fixed.to(pl_module.device))
        self._emit(writer, trainer, self.tag, images, self.n_steps)
        rows = ", ".join(f"z{int(d)} (var {float(activity[d]):.3g})" for d in dims)
        writer.add_text(f"{self.tag}_dims", f"rows, top to bottom: {rows}", trainer.global_step)
