"""``ReconstructionLogger``: rows of fixed validation inputs, each followed by the row of their reconstructions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer
from typing_extensions import override

from lightning_vae.callbacks.image_view import ImageView
from lightning_vae.callbacks.views import reconstruction_rows
from lightning_vae.checks import check_int

__all__ = ["ReconstructionLogger"]


class ReconstructionLogger(ImageView):
    """Log reconstructions next to their inputs: rows of inputs, each followed by the row of their reconstructions.

    The inputs are the first ``n_images`` validation examples of the run; a reconstruction is the
    likelihood mean at the posterior mean (``module.reconstruct(x)``). The grid goes to every logger
    of the trainer (TensorBoard, ``log_image``, MLflow, Comet), or to PNG files in the run's folder
    (``CSVLogger``, no logger); see :class:`~lightning_vae.viz.ViewWriter`.

    Args:
        n_images: Number of examples shown.
        nrow: Examples per row.
        every_n_epochs: Log at the end of every n-th validation epoch.
        value_range: Range of the data mapped to black..white.
        tag: Tag of the grid.

    Raises:
        ValueError: For a count below 1 or a bad ``value_range``.
        TypeError: For a count that is not an int.

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
        super().__init__(every_n_epochs, check_int("n_images", n_images, low=1), value_range, tag)
        self.nrow = check_int("nrow", nrow, low=1)

    @override
    def draw(self, trainer: Trainer, pl_module: Any) -> None:
        if self._fixed is None:
            return
        rows = reconstruction_rows(
            pl_module, self._fixed, self.nrow, fill=self.value_range[1], context=self._fixed_context
        )
        self.emit(trainer, self.tag, rows, self.nrow)
