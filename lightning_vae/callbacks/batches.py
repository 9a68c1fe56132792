"""What the callbacks read from a batch of any module besides its data: its labels when it has them, and the
posterior means of a latent group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from lightning_vae.callbacks.views import first_sample, group_means, latent_groups
from lightning_vae.data.common import CONTEXT_KEYS

__all__ = ["LABEL_KEYS", "batch_labels", "check_group", "posterior_means"]

#: Dict keys searched for labels in a dict batch, in this order: the context keys of a batch, then factors.
LABEL_KEYS = (*CONTEXT_KEYS, "factors")


def batch_labels(batch: Any) -> Tensor | None:
    """The labels or factors of a batch: the second element of an ``(x, y)`` batch, or the first tensor under
    :data:`LABEL_KEYS` of a dict batch; ``None`` when there are none.

    Example::

        >>> import torch
        >>> batch_labels((torch.zeros(2, 3), torch.tensor([4, 5]))), batch_labels({"x": torch.zeros(2, 3)})
        (tensor([4, 5]), None)
    """
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and isinstance(batch[1], Tensor):
        return batch[1]
    if isinstance(batch, Mapping):
        for key in LABEL_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    return None


def check_group(pl_module: Any, group: str | None, user: str) -> None:
    """Check at ``setup`` that ``group`` (unless ``None``) is one of the module's latent groups.

    Raises:
        ValueError: Naming ``user`` and the groups the model has.
    """
    names = latent_groups(pl_module)
    if group is not None and group not in names:
        raise ValueError(f"Expected `group` of {user} to be one of the model's latent groups {names}, got {group!r}")


def posterior_means(pl_module: Any, outputs: Any, x: Tensor, group: str | None = None) -> Tensor:
    """The posterior means ``(B, D)`` of a latent group for a batch ``x`` (``None``: the first group).

    Read from the step ``outputs`` of the monitor protocol (``groups[group]["posterior"]``, or the top-level
    ``"posterior"`` for the first group) when they hold the posterior, else computed: ``pl_module.encode(x)`` for
    the first group, :func:`~lightning_vae.viz.group_means` for another.

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import DiagonalGaussian
        >>> q = DiagonalGaussian(torch.ones(2, 3), torch.zeros(2, 3))
        >>> posterior_means(None, {"posterior": q}, torch.zeros(2, 5)).shape
        torch.Size([2, 3])
    """
    found: Any = None
    if isinstance(outputs, Mapping):
        groups = outputs.get("groups")
        found = groups.get(group, {}).get("posterior") if group is not None and isinstance(groups, Mapping) else None
        found = outputs.get("posterior") if group is None else found
    with torch.no_grad():
        if isinstance(found, Distribution):
            means = found.mean
        elif group is not None and latent_groups(pl_module) and group != latent_groups(pl_module)[0]:
            means = group_means(pl_module, x, group)
        else:
            means = pl_module.encode(x).mean
    return first_sample(means)
