"""The DCI metric: over batches, with explicit or positional splits, it gives the functional values."""

from __future__ import annotations

import pytest
import torch

from lightning_vae.functional.dci import dci, split_train_test
from lightning_vae.metrics import DCI


def _data(n=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    factors = torch.randint(0, 4, (n, 3), generator=g)
    codes = factors.double() @ torch.randn(3, 4, generator=g).double() + 0.3 * torch.randn(n, 4, generator=g).double()
    return codes, factors


def test_dci_over_batches_with_explicit_splits_equals_the_functional_value():
    codes, factors = _data()
    metric = DCI(importance="lasso")
    for c, f in zip(codes[:100].split(32), factors[:100].split(32)):
        metric.update(c, f)
    metric.update(codes[100:], factors[100:], split="test")
    expected = dci(codes[:100], factors[:100], codes[100:], factors[100:], importance="lasso")
    got = metric.compute()
    for name in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert got[name].item() == pytest.approx(getattr(expected, name), rel=1e-12), name


def test_a_positional_split_is_disentanglement_lib_s_split_train_test():
    codes, factors = _data(n=90, seed=1)
    metric = DCI(train_fraction=0.7)
    metric.update(codes, factors)
    n = split_train_test(90, 0.7)
    expected = dci(codes[:n], factors[:n], codes[n:], factors[n:])
    assert metric.compute()["disentanglement"].item() == pytest.approx(expected.disentanglement, rel=1e-12)


def test_metric_arguments_and_splits_are_checked():
    codes, factors = _data(n=20)
    with pytest.raises(ValueError, match="Expected `split` to be one of"):
        DCI().update(codes, factors, split="val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `train_fraction` to be a finite float > 0"):
        DCI(train_fraction=0.0)
    metric = DCI(train_fraction=1.0)
    metric.update(codes, factors)
    with pytest.raises(ValueError, match="needs training and test examples"):
        metric.compute()
    with pytest.raises(ValueError, match="same B"):
        DCI().update(codes, factors[:3])
