"""KLDecomposition: over batches it gives the functional value on the whole set; the parts sum to the average KL."""

from __future__ import annotations

import pytest
import torch

from lightning_vae.functional.kl_decomposition import kl_decomposition
from lightning_vae.metrics import KLDecomposition

SIZES = (32, 32, 17)


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in SIZES:
        loc = torch.randn(n, 3, generator=g) * torch.tensor([1.5, 0.4, 0.01])
        log_var = torch.randn(n, 3, generator=g) * 0.2 - torch.tensor([2.0, 1.0, 0.0])
        out.append((loc, log_var, loc + (0.5 * log_var).exp() * torch.randn(n, 3, generator=g)))
    return out


def test_over_batches_it_equals_the_functional_value_on_the_whole_set():
    batches = _batches()
    metric = KLDecomposition()
    for b in batches:
        metric.update(*b)
    loc, log_var, z = (torch.cat([b[i] for b in batches]).double() for i in range(3))
    expected = kl_decomposition(loc, log_var, z)
    got = metric.compute()
    for name in ("mutual_info", "total_correlation", "dimension_kl", "kl"):
        assert got[name].item() == pytest.approx(getattr(expected, name).item(), rel=1e-12, abs=1e-12), name
    assert got["mutual_info"] + got["total_correlation"] + got["dimension_kl"] == pytest.approx(got["kl"].item())
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(loc, (0.5 * log_var).exp()), torch.distributions.Normal(0.0, 1.0)
    )
    assert got["kl"].item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-12)


def test_a_subset_of_points_and_a_prior():
    batches = _batches(1)
    metric = KLDecomposition(max_points=20, seed=3, prior_loc=0.5, prior_log_var=torch.tensor([0.0, 0.2, -0.1]))
    for b in batches:
        metric.update(*b)
    loc, log_var, z = (torch.cat([b[i] for b in batches]).double() for i in range(3))
    subset = z[torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(3))[:20]]
    expected = kl_decomposition(
        loc, log_var, subset, torch.tensor(0.5).double(), torch.tensor([0.0, 0.2, -0.1]).double()
    )
    assert metric.compute()["total_correlation"].item() == pytest.approx(expected.total_correlation.item(), rel=1e-12)


def test_updates_are_checked():
    with pytest.raises(ValueError, match=r"same shape \(B, D\)"):
        KLDecomposition().update(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.warns(UserWarning, match="before the ``update``"), pytest.raises(ValueError, match="needs posteriors"):
        KLDecomposition().compute()
    with pytest.raises(ValueError, match="Expected `max_points` to be an int >= 1, got 0"):
        KLDecomposition(max_points=0)
