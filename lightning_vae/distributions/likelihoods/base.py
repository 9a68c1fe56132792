"""The base class of every likelihood: shapes, the reduction over data dimensions, and the data checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn

from lightning_vae.functional.math import at_least_float32


class Likelihood(HyperparametersMixin, nn.Module):
    """Base class. Subclasses implement :meth:`elementwise_log_prob`, :meth:`mean` and :meth:`sample`.

    Attributes:
        name: Short name used in messages.
        target_range: Closed interval the targets must lie in (``None`` means any finite value).
    """

    name = "likelihood"
    target_range: tuple[float, float] | None = None

    def param_shape(self, data_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the decoder output for one example with data of shape ``data_shape``."""
        return tuple(data_shape)

    def check_target(self, x: Tensor) -> None:
        """Raise ``ValueError`` if ``x`` is not a valid target (NaN/inf, or outside :attr:`target_range`).

        One fused min/max reduction (NaN and inf propagate into it), so the check costs one host read.
        """
        x = x.detach()
        lowest, highest = torch.aminmax(x if x.dtype in (torch.float32, torch.float64) else x.float())
        x_min, x_max = lowest.item(), highest.item()
        if not (math.isfinite(x_min) and math.isfinite(x_max)):
            bad = int((~torch.isfinite(x.float())).sum())
            raise ValueError(
                f"The batch contains {bad} NaN or infinite values; the data must be finite "
                "(check the dataset and its transforms)"
            )
        if self.target_range is not None:
            low, high = self.target_range
            if x_min < low or x_max > high:
                raise ValueError(
                    f"The {self.name} likelihood expects targets in [{low:g}, {high:g}], got values in "
                    f"[{x_min:g}, {x_max:g}]; rescale the data (e.g. divide 8-bit images by 255) or choose "
                    "another likelihood (e.g. 'gaussian')"
                )

    def check_params(self, x: Tensor, params: Tensor, sample_dims: int = 0) -> None:
        """Raise ``ValueError`` if the decoder output does not fit data of the shape of ``x``.

        Args:
            x: Data ``(B, *data_shape)``.
            params: Decoder output ``(*S, B, *param_shape)``.
            sample_dims: Number of leading sample dimensions ``S`` in ``params`` (not checked).
        """
        expected = self.param_shape(x.shape[1:])
        n = len(expected)
        got = tuple(params.shape)[sample_dims:]
        if len(got) < n + 1 or got[-n:] != expected or got[-n - 1] != x.shape[0]:
            raise ValueError(
                f"The decoder returned a tensor of shape {got}, but the {self.name} likelihood expects "
                f"(batch={x.shape[0]}, *{expected}) for data of shape {tuple(x.shape)}; check the decoder's output "
                "size"
            )

    def elementwise_log_prob(self, x: Tensor, params: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Log-probability of each data element, shape ``(*S, B, *data_shape)``."""
        raise NotImplementedError

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """``log p(x | params)`` summed over data dimensions, shape ``(*S, B)``, float32."""
        lp = self.elementwise_log_prob(at_least_float32(x), at_least_float32(params))
        return lp.flatten(start_dim=lp.dim() - (x.dim() - 1)).sum(-1)

    def nll(self, x: Tensor, params: Tensor) -> Tensor:
        """``-log p(x | params)`` summed over data dimensions, shape ``(*S, B)``, float32.

        The objective minimises this; a subclass may compute it directly (one operation fewer than
        negating :meth:`log_prob`).
        """
        return -self.log_prob(x, params)

    def mean(self, params: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The mean of p(x|z) in data space (used for reconstructions)."""
        raise NotImplementedError

    def sample(self, params: Tensor) -> Tensor:  # pragma: no cover - abstract
        """A sample of x from p(x|z)."""
        raise NotImplementedError


__all__ = ["Likelihood"]
