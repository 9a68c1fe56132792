"""DCI (functional/dci.py) equals disentanglement_lib's ``compute_dci`` on identical inputs (same draws, same
splits, seeded trees), and the lasso option is Eastwood & Williams' regressor."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import linear_model
from support.disentanglement import (
    ReferenceData,
    ToySource,
    completeness,
    compute_dci,
    disentanglement,
    representation,
    toy_encode,
)

from lightning_vae.functional.dci import completeness_score, dci, disentanglement_score, split_train_test
from lightning_vae.functional.interventional import sample_codes


def test_dci_from_a_source_equals_disentanglement_lib():
    source = ToySource()
    reference = compute_dci(
        ReferenceData(source), representation(toy_encode), np.random.RandomState(3), num_train=240, num_test=120
    )
    random_state = np.random.RandomState(3)
    train = sample_codes(source, toy_encode, 240, random_state)
    test = sample_codes(source, toy_encode, 120, random_state)
    scores = dci(*train, *test, seed=0)
    np.testing.assert_array_equal(scores.importance, reference["importance_matrix"])
    assert scores.disentanglement == pytest.approx(reference["disentanglement"], rel=1e-12)
    assert scores.completeness == pytest.approx(reference["completeness"], rel=1e-12)
    assert scores.informativeness_train == reference["informativeness_train"]
    assert scores.informativeness_test == reference["informativeness_test"]
    assert 0.0 <= scores.disentanglement <= 1.0 and 0.0 <= scores.completeness <= 1.0


def test_disentanglement_and_completeness_of_any_matrix_equal_the_reference():
    rng = np.random.default_rng(0)
    for shape in ((4, 3), (10, 5), (2, 2)):
        matrix = rng.random(shape) ** 3
        assert disentanglement_score(matrix) == pytest.approx(disentanglement(matrix), rel=1e-12)
        assert completeness_score(matrix) == pytest.approx(completeness(matrix), rel=1e-12)
    zeros = np.zeros((3, 2))  # no importance at all: disentanglement_lib's uniform weights
    assert disentanglement_score(zeros) == pytest.approx(disentanglement(zeros), abs=1e-12)
    assert completeness_score(np.eye(3)) == pytest.approx(1.0) and disentanglement_score(np.ones((3, 3))) < 1e-9


def test_the_lasso_option_is_eastwood_and_williams_regressor():
    """qedr: codes and factors standardised on the training set, Lasso per factor, |weights|, NRMSE."""
    rng = np.random.default_rng(1)
    factors = rng.integers(0, 5, size=(300, 3))
    codes = np.stack([factors[:, 0], factors[:, 1] + 0.5 * factors[:, 2], rng.normal(size=300), factors[:, 2]], 1)
    codes = codes + 0.1 * rng.normal(size=codes.shape)
    scores = dci(codes[:200], factors[:200], codes[200:], factors[200:], importance="lasso", lasso_alpha=0.05)

    def norm(a, mean, std):
        return (a - mean) / std

    cm, cs, fm, fs = codes[:200].mean(0), codes[:200].std(0), factors[:200].mean(0), factors[:200].std(0)
    expected, errors = np.zeros((4, 3)), []
    for k in range(3):
        model = linear_model.Lasso(alpha=0.05).fit(norm(codes[:200], cm, cs), norm(factors[:200, k], fm[k], fs[k]))
        expected[:, k] = np.abs(model.coef_)
        target = norm(factors[200:, k], fm[k], fs[k])
        errors.append(np.sqrt(np.mean((model.predict(norm(codes[200:], cm, cs)) - target) ** 2)) / np.std(target))
    np.testing.assert_allclose(scores.importance, expected, rtol=1e-10, atol=1e-12)
    assert scores.informativeness_test == pytest.approx(np.mean(errors), rel=1e-10)
    assert scores.importance[2].max() < 0.05  # the noise dimension is not used


def test_split_and_argument_checks():
    assert split_train_test(5, 0.5) == 3  # ceil, as disentanglement_lib
    codes, factors = np.random.default_rng(0).normal(size=(20, 3)), np.zeros((20, 2), dtype=int)
    factors[:, 0] = np.arange(20) % 2
    with pytest.raises(ValueError, match=r"factors \[1\] take one value"):
        dci(codes, factors, codes, factors)
    with pytest.raises(ValueError, match="at least 2 code dimensions and 2 factors"):
        dci(codes[:, :1], factors, codes[:, :1], factors)
    with pytest.raises(ValueError, match="integer factors"):
        dci(codes, factors.astype(float), codes, factors)
    with pytest.raises(ValueError, match="Expected `importance` to be one of"):
        dci(codes, np.stack([np.arange(20) % 2] * 2, 1), codes, factors, importance="forest")  # type: ignore[arg-type]
