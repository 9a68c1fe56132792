"""``ImageView``: the plumbing shared by the image callbacks (rank zero, frequency, fixed examples, any logger).

A view draws at the end of a validation epoch (every ``every_n_epochs``), on global rank zero,
outside the training step, from fixed inputs so that the images of one run are comparable over
time: the first validation examples seen (captured once). It writes through every logger of the
trainer with :class:`~lightning_vae.viz.ViewWriter`: TensorBoard image summaries, ``log_image`` of
loggers that have it (W&B), MLflow and Comet images, and PNG files in the run's folder for the
others (``CSVLogger``) or when there is no logger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_vae.checks import check_int, check_type
from lightning_vae.protocols import SupportsViews, require
from lightning_vae.utilities import batch_context, batch_data, logging_step
from lightning_vae.viz import ViewWriter, check_value_range, image_grid, is_image

__all__ = ["ImageView"]


class ImageView(Callback):
    """Base of the image views: subclasses implement :meth:`draw` and list the module methods they call in ``needs``.

    Args:
        every_n_epochs: Draw at the end of every n-th validation epoch.
        n_examples: Validation examples captured once as the fixed inputs (0: none).
        value_range: Range of the data mapped to black..white.
        tag: Name of the image in the loggers.

    Raises:
        ValueError: For a frequency below 1, a bad ``value_range`` or an empty tag.
        TypeError: For arguments of the wrong type; at ``setup``, for a module without the methods in ``needs``.
    """

    #: Methods of :class:`~lightning_vae.protocols.SupportsViews` the view calls (checked in ``setup``).
    needs: tuple[str, ...] = ()

    def __init__(self, every_n_epochs: int, n_examples: int, value_range: Sequence[float], tag: str) -> None:
        super().__init__()
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, low=1)
        self.n_examples = check_int("n_examples", n_examples, low=0)
        self.value_range = check_value_range(value_range)
        if not check_type("tag", tag, str, "a non-empty string"):
            raise ValueError(f"Expected `tag` to be a non-empty string, got {tag!r}")
        self.tag = tag
        self._fixed: Tensor | None = None
        #: The contexts of the fixed examples, for a conditional model (``None`` otherwise).
        self._fixed_context: Tensor | None = None
        self._warned: set[str] = set()
        self._out = ViewWriter(type(self).__name__)

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
        require(pl_module, SupportsViews, type(self).__name__, members=self.needs)

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
        x = batch_data(pl_module, batch, optional=True)
        if x is None:
            self._warn_once("batch", f"{type(self).__name__}: cannot find the data tensor in the batch; nothing logged")
            return
        x = x[: self.n_examples - have].detach().cpu().clone()
        self._fixed = x if self._fixed is None else torch.cat([self._fixed, x])
        context = batch_context(pl_module, batch)
        if context is not None:
            c = context[: x.shape[0]].detach().cpu().clone()
            self._fixed_context = c if self._fixed_context is None else torch.cat([self._fixed_context, c])

    def due(self, trainer: Trainer) -> bool:
        """Whether to draw now: rank zero, not the sanity check, every n-th epoch, and views are written at all."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return False
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return False
        return self._out.active(trainer)

    def emit(
        self,
        trainer: Trainer,
        tag: str,
        images: Tensor,
        nrow: int,
        caption: str | None = None,
        caption_tag: str | None = None,
    ) -> list[str]:
        """Write ``images`` ``(N, C, H, W)`` in data space as one grid under ``tag`` at the step of the scalars.

        ``caption`` explains the grid (TensorBoard's TEXT tab under ``caption_tag``, a caption, or a
        ``.txt`` file beside the PNG).

        Returns:
            Where the grid went (see :meth:`~lightning_vae.viz.ViewWriter.image`); empty when the
            examples are not images (warned once).
        """
        if not is_image(tuple(images.shape[1:])):
            self._warn_once(
                "shape",
                f"{type(self).__name__}: examples of shape {tuple(images.shape[1:])} are not images (C, H, W) with "
                "C in (1, 3, 4); nothing logged",
            )
            return []
        grid = image_grid(images, nrow, self.value_range)
        step = logging_step(trainer)  # the step of this validation's scalars
        return self._out.image(trainer, tag, grid, step, caption=caption, caption_tag=caption_tag)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.due(trainer):
            return
        with torch.no_grad():
            self.draw(trainer, pl_module)

    def draw(self, trainer: Trainer, pl_module: Any) -> None:  # pragma: no cover - abstract
        """Draw the view and write it with :meth:`emit`."""
        raise NotImplementedError
