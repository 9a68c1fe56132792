"""SAP (functional/sap.py) equals disentanglement_lib's ``compute_sap`` on identical inputs, discrete and
continuous."""

from __future__ import annotations

import numpy as np
import pytest
from support.disentanglement import ReferenceData, ToySource, compute_sap, representation, toy_encode

from lightning_vae.functional.interventional import sample_codes
from lightning_vae.functional.sap import sap, top_two_gap


@pytest.mark.parametrize("continuous", [False, True])
def test_sap_from_a_source_equals_disentanglement_lib(continuous):
    source = ToySource()
    score, matrix = compute_sap(
        ReferenceData(source), representation(toy_encode), np.random.RandomState(5), 200, 100, continuous
    )
    random_state = np.random.RandomState(5)
    train = sample_codes(source, toy_encode, 200, random_state)
    test = sample_codes(source, toy_encode, 100, random_state)
    mine = sap(*train, *test, continuous=continuous)
    np.testing.assert_allclose(mine.matrix, matrix, rtol=1e-12, atol=0)
    assert mine.score == pytest.approx(score, rel=1e-12)
    assert 0.0 <= mine.score <= 1.0


def test_sap_properties_and_checks():
    assert top_two_gap(np.array([[1.0, 0.5], [0.0, 0.5]])) == pytest.approx(0.5)
    codes, factors = np.random.default_rng(0).normal(size=(30, 3)), np.random.default_rng(1).integers(0, 3, (30, 2))
    with pytest.raises(ValueError, match="needs test codes"):
        sap(codes, factors)
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        sap(codes[:, :1], factors, continuous=True)
    constant = np.zeros_like(factors)
    with pytest.raises(ValueError, match="take one value"):
        sap(codes, constant, codes, constant)
