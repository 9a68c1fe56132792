"""MutualInformationGap: over batches it equals the whole-set value; it keeps float64 codes in float64; the binning
reads nothing back to the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.host_reads import HostReads

from lightning_vae.functional.disentanglement import discretize, mutual_information_gap
from lightning_vae.metrics import MutualInformationGap

THIRD = 1 / 3


def _near_edge_codes() -> tuple[torch.Tensor, torch.Tensor]:
    """Codes whose first column has values just under the bin edge 1/3 (3 bins over [0, 1]) in float64;
    rounded to float32 they land on the other side of it."""
    codes = torch.tensor(
        [[0.0, 0.0], [THIRD - 1e-12, 0.5], [THIRD - 1e-12, 0.5], [1.0, 1.0], [0.2, 0.9], [0.9, 0.1]],
        dtype=torch.float64,
    )
    factors = torch.tensor([[0, 0], [0, 1], [0, 1], [1, 1], [0, 0], [1, 0]])
    return codes, factors


def test_float64_codes_give_the_functional_value() -> None:
    codes, factors = _near_edge_codes()
    expected = mutual_information_gap(codes, factors, n_bins=3)
    assert expected.item() != mutual_information_gap(codes.float(), factors, n_bins=3).item()  # the case matters
    metric = MutualInformationGap(n_bins=3)
    metric.update(codes[:3], factors[:3])
    metric.update(codes[3:], factors[3:])
    assert metric.codes[0].dtype == torch.float64
    assert metric.compute().item() == expected.item()


def test_float32_codes_are_kept_as_float32() -> None:
    codes, factors = _near_edge_codes()
    metric = MutualInformationGap(n_bins=3)
    metric.update(codes.float(), factors)
    assert metric.codes[0].dtype == torch.float32
    assert metric.compute().item() == mutual_information_gap(codes.float(), factors, n_bins=3).item()


def test_discretize_reads_nothing_back_and_matches_numpy_edges() -> None:
    codes = torch.from_numpy(np.random.default_rng(3).normal(size=(300, 4)))
    codes[:, 3] = 2.5  # a constant column: numpy.histogram's edges 2.0 .. 3.0, every value in the middle bin
    counter = HostReads()

    class Probe:
        def run(self) -> torch.Tensor:
            return discretize(codes, 9)

    probe = Probe()
    with counter.patched():
        counter.watch(probe, ("run",))
        binned = probe.run()
    assert counter.reads == []
    for d in range(3):
        column = codes[:, d].numpy()
        edges = np.linspace(column.min(), column.max(), 10)
        np.testing.assert_array_equal(binned[:, d].numpy(), np.digitize(column, edges[1:-1]))
    constant = codes[:, 3].numpy()
    assert binned[:, 3].tolist() == (np.digitize(constant, np.histogram(constant, 9)[1][:-1]) - 1).tolist() == [4] * 300


def test_mig_metric_over_batches_equals_the_whole_set():
    g = torch.Generator().manual_seed(2)
    factors = torch.randint(0, 5, (90, 3), generator=g)
    codes = factors.float() @ torch.randn(3, 4, generator=g) + 0.5 * torch.randn(90, 4, generator=g)
    metric = MutualInformationGap(n_bins=10)
    for c, f in zip(codes.split(32), factors.split(32)):
        metric.update(c, f)
    assert metric.compute().item() == pytest.approx(mutual_information_gap(codes, factors, 10).item(), rel=1e-12)
