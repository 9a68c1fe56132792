"""The SAP metric: over batches, with a positional or explicit split, it gives the functional value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_vae.functional.dci import split_train_test
from lightning_vae.functional.sap import sap
from lightning_vae.metrics import SAPScore


def _data(n=90, seed=1):
    g = torch.Generator().manual_seed(seed)
    factors = torch.randint(0, 4, (n, 3), generator=g)
    codes = factors.double() @ torch.randn(3, 4, generator=g).double() + 0.3 * torch.randn(n, 4, generator=g).double()
    return codes, factors


def test_sap_metric_over_batches_equals_the_functional_value():
    codes, factors = _data()
    metric = SAPScore(train_fraction=0.7)
    for c, f in zip(codes.split(40), factors.split(40)):
        metric.update(c, f)
    n = split_train_test(90, 0.7)
    assert metric.compute().item() == pytest.approx(sap(codes[:n], factors[:n], codes[n:], factors[n:]).score)
    explicit = SAPScore(continuous=True)
    explicit.update(codes[:50], factors[:50])
    explicit.update(codes[50:], factors[50:], split="test")
    assert explicit.compute().item() == pytest.approx(sap(codes[:50], factors[:50], continuous=True).score, rel=1e-12)


def test_sap_metric_arguments_are_checked():
    with pytest.raises(ValueError, match="Expected `train_fraction` to be a finite float > 0"):
        SAPScore(train_fraction=0.0)
    with pytest.raises(TypeError, match="Expected `continuous` to be a bool"):
        SAPScore(continuous="yes")  # type: ignore[arg-type]
    codes, factors = _data(n=20)
    assert np.isfinite(SAPScore(continuous=True, train_fraction=0.5).forward(codes, factors).item())
