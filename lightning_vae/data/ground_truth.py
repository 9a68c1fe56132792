"""Data with known generative factors: the interface the disentanglement metrics sample from.

A ground-truth source has a grid of discrete factors (names and number of values), draws factor combinations
with a NumPy ``RandomState`` and renders the images of given factors. The embedded shapes
(:class:`~lightning_vae.data.ShapesDataModule`) and dSprites (:class:`~lightning_vae.data.DSpritesDataModule`)
keep it, so every metric of :mod:`lightning_vae.functional.interventional` runs on either.

Factors are drawn as disentanglement_lib draws them (``SplitDiscreteStateSpace.sample_latent_factors``): one
``random_state.randint(size, size=n)`` per factor, in factor order, so a seeded ``RandomState`` gives the same
factors here and there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import Tensor

from lightning_vae.checks import check_int, check_type


@runtime_checkable
class GroundTruthData(Protocol):
    """A source of images with known discrete factors.

    Attributes:
        factor_names: The factors' names, in column order.
        factor_sizes: The number of values of each factor.
    """

    @property
    def factor_names(self) -> tuple[str, ...]: ...  # noqa: D102

    @property
    def factor_sizes(self) -> tuple[int, ...]: ...  # noqa: D102

    def sample_factors(self, n: int, random_state: np.random.RandomState) -> np.ndarray:
        """``n`` factor combinations ``(n, K)`` int64, drawn with ``random_state``."""
        ...

    def render(self, factors: np.ndarray) -> Tensor:
        """The images ``(n, C, H, W)`` (float) of integer factors ``(n, K)``."""
        ...


def sample_uniform_factors(sizes: Sequence[int], n: int, random_state: np.random.RandomState) -> np.ndarray:
    """``n`` combinations drawn uniformly from the grid ``sizes``: one ``randint`` per factor, in order.

    Example::

        >>> import numpy as np
        >>> sample_uniform_factors((3, 6), 4, np.random.RandomState(0)).shape
        (4, 2)
    """
    check_int("n", n, low=0)
    check_type("random_state", random_state, np.random.RandomState, "a numpy.random.RandomState")
    factors = np.zeros((n, len(sizes)), dtype=np.int64)
    for k, size in enumerate(sizes):
        factors[:, k] = random_state.randint(size, size=n)
    return factors


def check_factors(factors: Any, sizes: Sequence[int]) -> np.ndarray:
    """``factors`` as an int64 array ``(n, K)`` within the grid ``sizes``.

    Raises:
        ValueError: For another shape or a value outside ``[0, size)``.
    """
    array = np.asarray(factors.cpu() if isinstance(factors, Tensor) else factors)
    if array.ndim != 2 or array.shape[1] != len(sizes) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Expected integer factors of shape (n, {len(sizes)}), got {array.dtype} {array.shape}")
    if array.size and ((array < 0).any() or (array >= np.asarray(sizes)).any()):
        raise ValueError(f"Expected factor values in [0, size) for sizes {tuple(sizes)}, got some outside")
    return array.astype(np.int64, copy=False)


def sample(source: GroundTruthData, n: int, random_state: np.random.RandomState) -> tuple[np.ndarray, Tensor]:
    """``n`` factor combinations and their images (disentanglement_lib's ``GroundTruthData.sample``)."""
    factors = source.sample_factors(n, random_state)
    return factors, source.render(factors)


def require_ground_truth(source: Any, user: str) -> GroundTruthData:
    """``source`` if it keeps :class:`GroundTruthData`.

    Raises:
        TypeError: Naming ``user`` and the members ``source`` lacks.
    """
    members = ("factor_names", "factor_sizes", "sample_factors", "render")
    missing = [m for m in members if not hasattr(source, m)]
    if missing:
        raise TypeError(
            f"{user} needs data with known factors (GroundTruthData: {', '.join(members)}); "
            f"{type(source).__name__} lacks {', '.join(missing)}"
        )
    return source


class UniformFactorGrid:
    """What a ground-truth source on a full grid of factors shares: uniform draws over ``factor_sizes``."""

    factor_sizes: tuple[int, ...]

    def sample_factors(self, n: int, random_state: np.random.RandomState) -> np.ndarray:
        """``n`` factor combinations ``(n, K)`` drawn uniformly (:func:`sample_uniform_factors`)."""
        return sample_uniform_factors(self.factor_sizes, n, random_state)


__all__ = [
    "GroundTruthData",
    "UniformFactorGrid",
    "check_factors",
    "require_ground_truth",
    "sample",
    "sample_uniform_factors",
]
