"""The collapse metrics accumulate over batches to the whole-set value, checked against NumPy/SciPy references."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.functional.collapse import kl_to_standard_normal, mutual_information
from lightning_vae.metrics import (
    ActiveUnits,
    CollapsedDimensions,
    ImportanceWeightedNLL,
    KLPerDimension,
    MutualInformation,
    MutualInformationGap,
    PosteriorMeanVariance,
)

SIZES = (16, 16, 16, 5)  # an uneven last batch


def _posteriors(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.0, 0.05, 0.3, 1.0, 2.0])
    locs = [torch.randn(n, 5, generator=g) * scale + 0.1 for n in SIZES]
    log_vars = [torch.randn(n, 5, generator=g) * 0.3 - 1.0 for n in SIZES]
    return locs, log_vars


def test_kl_per_dimension_over_batches_matches_torch_distributions():
    locs, log_vars = _posteriors()
    metric, from_means = KLPerDimension(), KLPerDimension()
    for loc, lv in zip(locs, log_vars):
        kl = kl_to_standard_normal(loc, lv.exp())
        metric.update(kl)
        from_means.update(kl.mean(0), batch_size=loc.shape[0])  # the form VAE's steps return
    loc, lv = torch.cat(locs), torch.cat(log_vars)
    reference = torch.distributions.kl_divergence(Normal(loc, (0.5 * lv).exp()), Normal(0.0, 1.0)).double().mean(0)
    torch.testing.assert_close(metric.compute(), reference, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(from_means.compute(), reference, rtol=1e-5, atol=1e-7)
    collapsed = CollapsedDimensions(threshold=0.5)
    for loc, lv in zip(locs, log_vars):
        collapsed.update(kl_to_standard_normal(loc, lv.exp()))
    assert int(collapsed.compute()) == int((reference < 0.5).sum())


def test_active_units_over_batches_match_numpy_on_the_whole_set():
    locs, _ = _posteriors()
    variance, au = PosteriorMeanVariance(), ActiveUnits()
    for loc in locs:
        variance.update(loc)
        au.update(loc)
    reference = np.var(torch.cat(locs).numpy().astype(np.float64), axis=0, ddof=1)
    np.testing.assert_allclose(variance.compute().numpy(), reference, rtol=1e-6)
    assert int(au.compute()) == int((reference > 0.01).sum()) == 3
    # Not the mean of per-batch counts: a dimension that varies only between batches is active over the set.
    between = ActiveUnits()
    for i in range(4):
        between.update(torch.full((8, 1), float(i)))
    assert int(between.compute()) == 1


def test_active_units_of_sampled_means_over_batches_match_the_whole_set():
    from lightning_vae.functional.collapse import posterior_mean_variance, sampled_means

    samples = torch.randn(4, sum(SIZES), 5, dtype=torch.float64) + torch.cat(_posteriors()[0]).double()
    means, noise = sampled_means(samples)
    metric, count = PosteriorMeanVariance(), ActiveUnits()
    for m, n in zip(torch.split(means, SIZES), torch.split(noise, SIZES)):
        metric.update(m, n)
        count.update(m, n)
    expected = posterior_mean_variance(means, noise)
    torch.testing.assert_close(metric.compute(), expected, rtol=1e-12, atol=1e-12)
    assert int(count.compute()) == int((expected > 0.01).sum())


def test_mutual_information_is_the_size_weighted_mean_of_batch_estimates():
    locs, log_vars = _posteriors()
    metric = MutualInformation()
    per_batch = []
    for loc, lv in zip(locs, log_vars):
        q = DiagonalGaussian(loc, lv)
        z = q.sample()
        metric.update(q, z)
        per_batch.append(mutual_information(q, z).item())
    expected = sum(m * n for m, n in zip(per_batch, SIZES)) / sum(SIZES)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)
    assert metric.compute().item() <= math.log(16)


def test_metrics_reset_and_pickle():
    metric = ActiveUnits()
    metric.update(torch.randn(10, 3))
    metric.reset()
    metric.update(torch.zeros(10, 3))
    assert int(metric.compute()) == 0
    clone = pickle.loads(pickle.dumps(KLPerDimension()))
    clone.update(torch.ones(2, 3))
    torch.testing.assert_close(clone.compute(), torch.ones(3, dtype=torch.float64))


def test_metric_arguments_are_validated():
    with pytest.raises(ValueError, match="threshold"):
        ActiveUnits(threshold=-1.0)
    with pytest.raises(TypeError, match=r"`threshold` to be a finite float, got 'x'"):
        CollapsedDimensions(threshold="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`threshold` to be a finite float, got nan"):
        ActiveUnits(threshold=float("nan"))
    with pytest.raises(TypeError, match=r"`n_samples` to be an int, got 2.0"):
        ImportanceWeightedNLL(n_samples=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_samples"):
        ImportanceWeightedNLL(n_samples=0)
    with pytest.raises(ValueError, match="unit"):
        ImportanceWeightedNLL(unit="bits")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_bins"):
        MutualInformationGap(n_bins=1)
    with pytest.raises(ValueError, match="entropy"):
        MutualInformation(entropy="mc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(D,\) with `batch_size`"):
        KLPerDimension().update(torch.ones(2, 3), batch_size=2)
    with pytest.raises(ValueError, match=r"`batch_size` to be an int >= 1, got 0"):
        KLPerDimension().update(torch.ones(3), batch_size=0)
    with pytest.raises(ValueError, match=r"`kl` to have shape \(B, D\), got shape \(2, 3, 4\)"):
        KLPerDimension().update(torch.ones(2, 3, 4))
    with pytest.raises(TypeError, match=r"`posterior_mean` to be a tensor, got \[\[0.0\]\] \(list\)"):
        PosteriorMeanVariance().update([[0.0]])  # type: ignore[arg-type]
    lacks = r"ImportanceWeightedNLL needs `encode` and `log_joint` on the module, and Linear has no `encode` and "
    with pytest.raises(TypeError, match=lacks):
        ImportanceWeightedNLL(n_samples=2).update(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="at least 2 examples"):
        metric = ActiveUnits()
        metric.update(torch.zeros(1, 3))
        metric.compute()
