"""MIG and its discretisation (functional/disentanglement.py) against a NumPy reference written independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lightning_vae.functional.disentanglement import discretize, mutual_information_gap


def _mig_reference(codes: np.ndarray, factors: np.ndarray, n_bins: int) -> float:
    """MIG as in disentanglement_lib: np.histogram bins, then discrete MI from counts (written independently)."""
    binned = np.stack([np.digitize(c, np.histogram(c, n_bins)[1][:-1]) for c in codes.T])  # (D, N), bins 1..n_bins

    def mi(a, b):
        _, ai = np.unique(a, return_inverse=True)
        _, bi = np.unique(b, return_inverse=True)
        table = np.zeros((ai.max() + 1, bi.max() + 1))
        np.add.at(table, (ai, bi), 1)
        p = table / table.sum()
        pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
        nz = p > 0
        return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())

    gaps = []
    for v in factors.T:
        h = stats.entropy(np.unique(v, return_counts=True)[1])
        scores = sorted((mi(b, v) for b in binned), reverse=True)
        gaps.append((scores[0] - scores[1]) / h)
    return float(np.mean(gaps))


def test_mig_matches_a_numpy_reference():
    rng = np.random.default_rng(4)
    factors = np.stack([rng.integers(0, 3, 600), rng.integers(0, 6, 600), rng.integers(0, 10, 600)], 1)
    codes = np.stack(
        [
            factors[:, 0] + 0.3 * rng.normal(size=600),
            factors[:, 1] + 0.8 * rng.normal(size=600),
            0.5 * factors[:, 1] + factors[:, 2] + rng.normal(size=600),
            rng.normal(size=600),
        ],
        1,
    )
    got = mutual_information_gap(torch.from_numpy(codes), torch.from_numpy(factors), n_bins=20)
    assert got.item() == pytest.approx(_mig_reference(codes, factors, 20), rel=1e-9)


def test_discretize_matches_numpy_digitize():
    codes = np.random.default_rng(5).normal(size=(200, 3))
    expected = np.stack([np.digitize(c, np.histogram(c, 7)[1][:-1]) - 1 for c in codes.T], 1)
    np.testing.assert_array_equal(discretize(torch.from_numpy(codes), 7).numpy(), expected)


def test_mig_properties_and_errors():
    f = torch.cartesian_prod(torch.arange(4), torch.arange(5), torch.arange(3))
    assert mutual_information_gap(f[:, [2, 0, 1]].double(), f, n_bins=5).item() == pytest.approx(1.0, abs=1e-9)
    noise = torch.randn(f.shape[0], 4)
    assert mutual_information_gap(noise, f).item() < 0.1
    with pytest.raises(ValueError, match="at least 2 latent"):
        mutual_information_gap(torch.zeros(10, 1), torch.zeros(10, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="varies"):
        mutual_information_gap(torch.randn(10, 2), torch.zeros(10, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="same N"):
        mutual_information_gap(torch.randn(10, 2), torch.zeros(9, 1, dtype=torch.long))


@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.37), (7.0, 5.0), (0.1, -1.3), (3.0, 0.0)])
def test_float32_codes_are_binned_against_float32_edges_as_numpy(scale: float, offset: float) -> None:
    """disentanglement_lib bins with np.histogram's edges, which NumPy builds in the codes' type: quantised float32
    codes that sit on a float32 edge go to the bin above it (float64 edges put some of them one bin lower)."""
    grid = np.arange(101) / 100 * scale + offset
    rng = np.random.default_rng(7)
    factors = np.stack([np.arange(101), rng.integers(0, 4, 101)], 1)
    codes = np.stack([grid, rng.permutation(grid), np.round(rng.normal(size=101), 2)], 1).astype(np.float32)
    expected = np.stack([np.digitize(c, np.histogram(c, 20)[1][:-1]) - 1 for c in codes.T], 1)
    np.testing.assert_array_equal(discretize(torch.from_numpy(codes), 20).numpy(), expected)
    got = mutual_information_gap(torch.from_numpy(codes), torch.from_numpy(factors), n_bins=20)
    assert got.item() == pytest.approx(_mig_reference(codes, factors, 20), rel=1e-9)
