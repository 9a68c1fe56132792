"""FactorVAEScore and BetaVAEScore fed with the groups of a ground-truth source, in several batches, give the numbers
of the functional scores (which equal disentanglement_lib's, tests/functional/test_interventional.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.disentanglement import ToySource, toy_encode

from lightning_vae.functional.interventional import (
    beta_vae_score,
    factor_vae_score,
    fixed_factor_groups,
    pair_groups,
)
from lightning_vae.metrics import BetaVAEScore, FactorVAEScore


def _codes(source, factors):
    return toy_encode(source.render(factors.reshape(-1, factors.shape[-1]))).view(*factors.shape[:-1], -1)


def test_factor_vae_metric_equals_the_functional_score():
    source = ToySource()
    expected = factor_vae_score(source, toy_encode, batch_size=16, n_train=90, n_eval=40, n_variance=300, seed=2)
    rs = np.random.RandomState(2)
    metric = FactorVAEScore(n_factors=3)
    variance_codes = _codes(source, source.sample_factors(300, rs))
    for chunk in variance_codes.split(128):  # global variances from several batches
        metric.update(chunk)
    for n_groups, split in ((90, "train"), (40, "eval")):
        fixed, groups = fixed_factor_groups(source, n_groups, 16, rs)
        codes = _codes(source, groups)
        for idx in np.array_split(np.arange(n_groups), 3):
            metric.update(codes[idx], torch.from_numpy(fixed[idx]), split=split)
    got = metric.compute()
    assert got["train_accuracy"].item() == expected.train_accuracy
    assert got["eval_accuracy"].item() == expected.eval_accuracy
    assert got["active_dims"].item() == expected.active_dims


def test_beta_vae_metric_equals_the_functional_score():
    source = ToySource()
    expected = beta_vae_score(source, toy_encode, batch_size=8, n_train=80, n_eval=40, seed=5)
    rs = np.random.RandomState(5)
    metric = BetaVAEScore()
    for n_points, split in ((80, "train"), (40, "eval")):
        labels, factors = pair_groups(source, n_points, 8, rs)
        codes = _codes(source, factors)  # (n, 2, B, D)
        for idx in np.array_split(np.arange(n_points), 2):
            metric.update(codes[idx, 0], codes[idx, 1], torch.from_numpy(labels[idx]), split=split)
    got = metric.compute()
    assert got["train_accuracy"].item() == pytest.approx(expected.train_accuracy, abs=1e-12)
    assert got["eval_accuracy"].item() == pytest.approx(expected.eval_accuracy, abs=1e-12)


def test_updates_are_checked():
    metric = FactorVAEScore(n_factors=2)
    with pytest.raises(ValueError, match=r"\(G, B, D\) with B >= 2"):
        metric.update(torch.zeros(3, 1, 2), fixed_factor=0)
    with pytest.raises(ValueError, match=r"`fixed_factor` in \[0, 2\)"):
        metric.update(torch.zeros(3, 4, 2), fixed_factor=2)
    with pytest.raises(ValueError, match=r"int or a tensor of shape \(3,\)"):
        metric.update(torch.zeros(3, 4, 2), fixed_factor=torch.zeros(2))
    with pytest.raises(ValueError, match="needs codes of random images"):
        metric.compute()
    metric.update(torch.randn(20, 2))
    metric.update(torch.randn(3, 4, 2), fixed_factor=0)
    with pytest.raises(ValueError, match="both splits"):
        metric.compute()
    with pytest.raises(ValueError, match="shape of `codes_a`"):
        BetaVAEScore().update(torch.zeros(2, 4, 3), torch.zeros(2, 4, 2), 0)
