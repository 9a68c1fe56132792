"""The SAP score as a torchmetrics metric over codes and factors."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_vae.checks import check_int, check_type
from lightning_vae.functional.sap import sap
from lightning_vae.metrics.dci import CodesAndFactors


class SAPScore(CodesAndFactors):
    """The SAP score (Kumar et al. 2018) of codes against factors, in [0, 1].

    Delegates to :func:`~lightning_vae.functional.sap.sap`: discrete factors take a linear SVM's accuracy on the test
    examples, continuous ones the squared correlation on the training examples.

    Args:
        continuous: Treat the factors as continuous.
        seed: ``random_state`` of the classifiers.
        train_fraction: Share of the examples used for fitting when no batch is marked ``"test"``.

    Example::

        >>> import torch
        >>> f = torch.cartesian_prod(torch.arange(4), torch.arange(5))
        >>> metric = SAPScore(continuous=True)
        >>> metric.update(f.double(), f)
        >>> metric.update(f.double(), f, split="test")
        >>> round(metric.compute().item(), 3)  # each factor correlated with its own dimension alone
        1.0
    """

    def __init__(self, continuous: bool = False, seed: int = 0, train_fraction: float = 0.8, **kwargs: Any) -> None:
        super().__init__(train_fraction, **kwargs)
        self.continuous = check_type("continuous", continuous, bool, "a bool")
        self.seed = check_int("seed", seed)

    def compute(self) -> Tensor:
        codes_train, factors_train, codes_test, factors_test = self._splits()
        result = sap(codes_train, factors_train, codes_test, factors_test, self.continuous, self.seed)
        return torch.tensor(result.score, dtype=torch.float64)


__all__ = ["SAPScore"]
