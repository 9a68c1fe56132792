"""DCI as a torchmetrics metric, and what the metrics over codes and factors with a training and a test split share."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_vae.checks import check_choice, check_float, check_int
from lightning_vae.functional.dci import Importance, dci, split_train_test

#: Which part of the data a batch of codes belongs to.
Split = Literal["train", "test"]


class CodesAndFactors(Metric):
    """Keeps codes and integer factors of every batch (concatenated across processes), each marked train or test.

    ``update(codes, factors, split="test")`` marks held-out examples. When no batch was marked ``"test"``, the
    set is split by position as disentanglement_lib's ``split_train_test`` does (the first
    ``ceil(n * train_fraction)`` for training); under DDP the gathered order is rank by rank, so a positional
    split equals one process's only with explicit splits.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    codes: list[Tensor]
    factors: list[Tensor]
    test: list[Tensor]

    def __init__(self, train_fraction: float = 0.8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_fraction = check_float("train_fraction", train_fraction, low=0.0, high=1.0, strict_low=True)
        self.add_state("codes", default=[], dist_reduce_fx="cat")
        self.add_state("factors", default=[], dist_reduce_fx="cat")
        self.add_state("test", default=[], dist_reduce_fx="cat")

    def update(self, codes: Tensor, factors: Tensor, split: Split = "train") -> None:
        """Add codes ``(B, D)`` (usually posterior means) and integer factors ``(B, K)`` of the same examples."""
        check_choice("split", split, Split)
        if codes.dim() != 2 or factors.dim() != 2 or codes.shape[0] != factors.shape[0]:
            raise ValueError(
                "Expected codes (B, D) and factors (B, K) with the same B, got "
                f"{tuple(codes.shape)} and {tuple(factors.shape)}"
            )
        self.codes.append(codes.detach().to(torch.float64 if codes.dtype == torch.float64 else torch.float32))
        self.factors.append(factors.detach().long())
        self.test.append(torch.full((codes.shape[0],), split == "test", dtype=torch.bool, device=codes.device))

    def _splits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        codes = dim_zero_cat(self.codes).double().cpu().numpy()
        factors = dim_zero_cat(self.factors).cpu().numpy().reshape(codes.shape[0], -1)
        test = dim_zero_cat(self.test).cpu().numpy().astype(bool)
        if not test.any():
            test = np.arange(codes.shape[0]) >= split_train_test(codes.shape[0], self.train_fraction)
        if test.all() or not test.any():
            raise ValueError(
                f"{type(self).__name__} needs training and test examples, got {codes.shape[0]} in one split"
            )
        return codes[~test], factors[~test], codes[test], factors[test]


class DCI(CodesAndFactors):
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018) of codes against factors.

    Delegates to :func:`~lightning_vae.functional.dci.dci` (importances from gradient-boosted trees as
    disentanglement_lib, or the lasso). ``compute()`` returns ``{"disentanglement", "completeness",
    "informativeness_train", "informativeness_test"}`` (float64 tensors).

    Args:
        importance: ``"gbt"`` or ``"lasso"``.
        seed: ``random_state`` of the trees or regressors.
        lasso_alpha: The Lasso's penalty.
        train_fraction: Share of the examples used for fitting when no batch is marked ``"test"``.

    Example::

        >>> import torch
        >>> f = torch.cartesian_prod(torch.arange(4), torch.arange(5))
        >>> metric = DCI()
        >>> metric.update(f.double(), f)
        >>> metric.update(f.double(), f, split="test")
        >>> {k: round(v.item(), 3) for k, v in metric.compute().items()}["disentanglement"]
        1.0
    """

    def __init__(
        self,
        importance: Importance = "gbt",
        seed: int = 0,
        lasso_alpha: float = 0.02,
        train_fraction: float = 0.8,
        **kwargs: Any,
    ) -> None:
        super().__init__(train_fraction, **kwargs)
        self.importance: Importance = check_choice("importance", importance, Importance)
        self.seed = check_int("seed", seed)
        self.lasso_alpha = check_float("lasso_alpha", lasso_alpha, low=0.0, strict_low=True)

    def compute(self) -> dict[str, Tensor]:
        scores = dci(*self._splits(), importance=self.importance, seed=self.seed, lasso_alpha=self.lasso_alpha)
        return {
            name: torch.tensor(getattr(scores, name), dtype=torch.float64)
            for name in ("disentanglement", "completeness", "informativeness_train", "informativeness_test")
        }


__all__ = ["CodesAndFactors", "DCI", "Split"]
