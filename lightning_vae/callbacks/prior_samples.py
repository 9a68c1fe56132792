"""``PriorSampleLogger``: samples from the prior, drawn from fixed latent noise at every validation epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer
from torch import Tensor
from typing_extensions import override

from lightning_vae.callbacks.image_view import ImageView
from lightning_vae.callbacks.views import class_samples, prior_samples
from lightning_vae.checks import check_int
from lightning_vae.utilities import is_conditional

__all__ = ["PriorSampleLogger"]


class PriorSampleLogger(ImageView):
    """Log samples from the prior: z ~ p(z) from a fixed seed, shown as the likelihood mean.

    The same latent noise is drawn at every epoch (``seed``), so the grid shows how the decoder's
    picture of the same points changes during training. For a model conditional on class labels (``n_classes``)
    the grid has one row per class, the same latent noise in every row (``n_images // n_classes`` columns, at
    least one; :func:`~lightning_vae.callbacks.views.class_samples`); for a model conditional on features it draws
    nothing (warned once): there is no context to sample at. The grid goes to every logger of the
    trainer, or to PNG files in the run's folder (see :class:`~lightning_vae.viz.ViewWriter`).

    Args:
        n_images: Number of samples.
        nrow: Samples per row.
        every_n_epochs: Log at the end of every n-th validation epoch.
        seed: Seed of the latent noise (the global random state is left untouched).
        value_range: Range of the data mapped to black..white.
        tag: Tag of the grid.

    Raises:
        ValueError: For a count below 1 or a bad ``value_range``.
        TypeError: For a count or seed that is not an int.

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
        self.n_images = check_int("n_images", n_images, low=1)
        self.nrow = check_int("nrow", nrow, low=1)
        self.seed = check_int("seed", seed)

    def samples(self, pl_module: Any) -> Tensor:
        """The ``n_images`` samples from the fixed seed, in data space (:func:`~lightning_vae.viz.prior_samples`)."""
        return prior_samples(pl_module, self.n_images, self.seed)

    @override
    def draw(self, trainer: Trainer, pl_module: Any) -> None:
        if getattr(pl_module, "autoregressive", False):
            self._warn_once(
                "autoregressive",
                "PriorSampleLogger: the decoder is autoregressive, so each grid costs one decoder pass per pixel",
            )
        if is_conditional(pl_module):
            n_classes = getattr(pl_module.model, "n_classes", None)
            if not isinstance(n_classes, int):
                self._warn_once("features", "PriorSampleLogger: a model conditional on features has no class to show")
                return
            columns = max(1, self.n_images // n_classes)
            self.emit(trainer, self.tag, class_samples(pl_module, columns, self.seed), columns)
            return
        self.emit(trainer, self.tag, self.samples(pl_module), self.nrow)
