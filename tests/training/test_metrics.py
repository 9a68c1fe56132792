"""The evaluation means of the training module (training/metrics.py): example-weighted means over batches of any
size against NumPy, per-group KL means, the IW-NLL mean, NaN batches that make the epoch NaN and are named, bits
per dimension, and the stages kept apart."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_vae.objective import ELBOTerms
from lightning_vae.training.metrics import EVAL_TERMS, EvalMetrics


def _terms(loss: float, elbo: float, recon: float, kl: float, kl_groups: dict | None = None) -> ELBOTerms:
    t = torch.tensor
    groups = None if kl_groups is None else {k: t(v) for k, v in kl_groups.items()}
    return ELBOTerms(t(loss), t(elbo), t(recon), t(kl), None, t(kl), None, None, kl_groups=groups)


def test_epoch_means_weight_each_batch_by_its_examples() -> None:
    metrics = EvalMetrics()
    batches = [(_terms(3.0, -3.0, 2.0, 1.0), 8), (_terms(5.0, -5.5, 4.0, 1.5), 2), (_terms(1.0, -1.0, 0.5, 0.5), 5)]
    for i, (terms, n) in enumerate(batches):
        updated = metrics.update("val", terms, n=n, batch_idx=i)
        assert list(updated) == ["val/loss", "val/elbo", "val/recon", "val/kl"]
    sizes = np.array([n for _, n in batches], dtype=float)
    for term in EVAL_TERMS:
        values = np.array([float(getattr(t, term)) for t, _ in batches])
        expected = (values * sizes).sum() / sizes.sum()  # the mean over examples, not over batches
        assert metrics.metric("val", term).compute().item() == pytest.approx(expected, rel=1e-6)
    assert not metrics.metric("test", "loss").update_called  # the stages are kept apart
    metrics.reset("val")
    assert not metrics.metric("val", "loss").update_called


def test_several_groups_get_their_own_kl_means() -> None:
    metrics = EvalMetrics(group_names=("z2", "z1"))
    updated = metrics.update("test", _terms(1.0, -1.0, 0.5, 0.5, {"z2": 0.1, "z1": 0.4}), n=4, batch_idx=0)
    assert list(updated)[-2:] == ["test/kl/z2", "test/kl/z1"]
    metrics.update("test", _terms(1.0, -1.0, 0.5, 0.5, {"z2": 0.3, "z1": 0.2}), n=12, batch_idx=1)
    assert metrics.metric("test", "kl_z2").compute().item() == pytest.approx((4 * 0.1 + 12 * 0.3) / 16, rel=1e-6)
    assert metrics.metric("test", "kl_z1").compute().item() == pytest.approx((4 * 0.4 + 12 * 0.2) / 16, rel=1e-6)
    single = EvalMetrics(group_names=("z",))
    assert single.groups == () and "val_kl_z" not in single.means


def test_the_importance_weighted_nll_is_the_mean_over_examples() -> None:
    metrics = EvalMetrics()
    metrics.update_nll("val", torch.tensor([80.0, 90.0, 100.0]))
    metrics.update_nll("val", torch.tensor([70.0]))
    assert metrics.metric("val", "nll_iw").compute().item() == 85.0


def test_a_non_finite_batch_makes_the_epoch_nan_and_is_named() -> None:
    metrics = EvalMetrics()
    assert metrics.nonfinite_report("val") is None  # nothing seen
    for i, loss in enumerate([1.0, float("nan"), 2.0, float("inf"), 3.0]):
        metrics.update("val", _terms(loss, -loss, loss, 0.0), n=2, batch_idx=i)
    assert math.isnan(metrics.metric("val", "loss").compute().item())  # never an optimistic mean without it
    report = metrics.nonfinite_report("val")
    assert report is not None and report.startswith("val: 2 of 5 batches had a non-finite loss (batch indices [1, 3])")
    assert "the val/ epoch values are NaN" in report
    assert metrics.nonfinite_report("val") is None  # the epoch's losses are forgotten once reported
    metrics.update("val", _terms(1.0, -1.0, 1.0, 0.0), n=2, batch_idx=0)
    assert metrics.nonfinite_report("val") is None


def test_bits_per_dimension_of_the_best_estimate() -> None:
    metrics = EvalMetrics()
    assert metrics.bits_per_dim("val", (1, 28, 28), importance_weighted=False) is None  # nothing yet
    metrics.update("val", _terms(100.0, -100.0, 90.0, 10.0), n=4, batch_idx=0)
    dims = 784  # bits per dimension: nats / (D ln 2)
    bound = metrics.bits_per_dim("val", (1, 28, 28), importance_weighted=False)
    assert bound is not None and bound.item() == pytest.approx(100.0 / (dims * math.log(2)), rel=1e-6)  # -ELBO
    assert metrics.bits_per_dim("val", (1, 28, 28), importance_weighted=True) is None
    metrics.update_nll("val", torch.tensor([95.0, 97.0]))
    iw = metrics.bits_per_dim("val", (1, 28, 28), importance_weighted=True)
    assert iw is not None and iw.item() == pytest.approx(96.0 / (dims * math.log(2)), rel=1e-6)
