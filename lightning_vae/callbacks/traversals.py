"""``LatentTraversalLogger``: for the most active latent dimensions, one row varying that dimension alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_vae.callbacks.image_view import ImageView
from lightning_vae.callbacks.views import latent_groups, latent_traversal
from lightning_vae.checks import check_float, check_int, check_type

__all__ = ["LatentTraversalLogger"]


class LatentTraversalLogger(ImageView):
    """Log latent traversals: for the most active dimensions, one row varying that dimension alone.

    Activity is the variance over the fixed validation examples of the posterior mean of each
    dimension (the statistic of active units, Burda et al. 2015). Each row starts from the
    posterior mean of the first example and sweeps one dimension over ``n_steps`` values evenly
    spaced in ``[-limit, limit]``; the rows are ordered from the most active dimension down, and the
    dimensions shown are written next to the grid as text (TensorBoard: ``<tag>_dims``; other
    loggers: the image's caption or a ``.txt`` file beside the PNG).

    For a model of several latent groups the traversal is in ``group`` (default the top group): the groups above
    it stay at the posterior means of the first example and the groups below it follow from their conditional
    prior means, top-down (see :func:`~lightning_vae.viz.latent_traversal`); a single-group model is traversed
    through ``encode`` and ``decode``. For a conditional model the activity is measured on ``q(z | x, c)`` with each
    example's own context, and every image is decoded at one context: the class ``condition`` when given (a model
    conditional on labels), else the first example's.

    Args:
        n_dims: Number of dimensions (rows) shown.
        n_steps: Values per dimension (columns).
        limit: The sweep covers ``[-limit, limit]`` (in units of the standard normal prior).
        n_examples: Validation examples the activity is measured on.
        every_n_epochs: Log at the end of every n-th validation epoch.
        value_range: Range of the data mapped to black..white.
        tag: Tag of the grid.
        group: The latent group traversed; ``None``: the model's top group (its first group name).
        condition: For a model conditional on labels, the class every image is decoded at; ``None``: the first
            example's context.

    Raises:
        ValueError: For counts below 1, ``n_examples < 2``, a ``limit`` that is not positive and finite, or a bad
            ``value_range``; at ``setup``, for a ``group`` the model does not have.
        TypeError: For a count that is not an int, a ``limit`` that is not a number or a ``group`` that is not a
            string.

    Example::

        >>> from lightning.pytorch import LightningModule, Trainer
        >>> trainer = Trainer(callbacks=[LatentTraversalLogger(n_dims=6, n_steps=9, limit=3.0)], logger=False)
        >>> LatentTraversalLogger(group="z1").group  # a lower group of a hierarchical model
        'z1'
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
        group: str | None = None,
        condition: int | None = None,
    ) -> None:
        # The activity of a dimension is a variance over the examples: it needs two.
        super().__init__(every_n_epochs, check_int("n_examples", n_examples, low=2), value_range, tag)
        self.n_dims = check_int("n_dims", n_dims, low=1)
        self.n_steps = check_int("n_steps", n_steps, low=1)
        self.limit = check_float("limit", limit, low=0.0, strict_low=True)
        self.group = None if group is None else check_type("group", group, str, "a latent group's name or None")
        self.condition = None if condition is None else check_int("condition", condition, low=0)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        names = latent_groups(pl_module)
        if self.group is not None and self.group not in names:
            raise ValueError(
                f"Expected `group` of LatentTraversalLogger to be one of the model's latent groups {names}, got "
                f"{self.group!r}"
            )

    def traversal(self, pl_module: Any, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(images (k * n_steps, *data), dims (k,), activity (D,))`` for examples ``x``; dims by falling activity."""
        context = None if self._fixed_context is None else self._fixed_context[: x.shape[0]].to(x.device)
        condition = None if self.condition is None or context is None else torch.tensor(self.condition)
        return latent_traversal(
            pl_module, x, self.n_dims, self.n_steps, self.limit, group=self.group, context=context, condition=condition
        )

    @override
    def draw(self, trainer: Trainer, pl_module: Any) -> None:
        if self._fixed is None or self._fixed.shape[0] < 2:
            return
        if getattr(pl_module, "autoregressive", False):
            self._warn_once("autoregressive", "LatentTraversalLogger: skipped, the decoder is autoregressive (needs x)")
            return
        images, dims, activity = self.traversal(pl_module, self._fixed.to(pl_module.device))
        names = latent_groups(pl_module)
        group = (self.group or names[0]) if len(names) > 1 else None
        label = "z{}" if group is None else group + "[{}]"  # several groups: the group's name and the dimension
        rows = ", ".join(f"{label.format(int(d))} (var {float(activity[d]):.3g})" for d in dims)
        self.emit(
            trainer,
            self.tag,
            images,
            self.n_steps,
            caption=f"rows, top to bottom: {rows}",
            caption_tag=f"{self.tag}_dims",
        )
