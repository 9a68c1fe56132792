"""The separated attribute predictability (SAP) score (Kumar et al. 2018, section 3), as disentanglement_lib.

A score matrix ``S`` ``(D, K)`` says how well code dimension ``d`` alone predicts factor ``k``; SAP is the mean over
factors of the gap between the two largest scores of their column. Discrete factors (the default): ``S[d, k]`` is
the test accuracy of ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` fitted on the one dimension.
Continuous factors: the squared correlation ``cov(z_d, v_k)^2 / (var(z_d) var(v_k))`` on the training codes
(``0`` for a dimension with variance at most ``1e-12``).

Conventions: codes and factors are ``(N, D)`` and ``(N, K)``; the classifiers are seeded (``random_state=seed``),
where disentanglement_lib leaves them to the global NumPy state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from lightning_vae.checks import check_int
from lightning_vae.functional.dci import check_codes_factors, check_factors_vary, check_held_out
from lightning_vae.functional.disentanglement import require_sklearn


class SAPScores(NamedTuple):
    """The SAP score and its score matrix."""

    #: Mean over factors of the gap between the two best single-dimension predictors, in [0, 1].
    score: float
    #: ``(D, K)``: test accuracy (discrete) or squared correlation (continuous) of each dimension for each factor.
    matrix: np.ndarray


def sap_matrix(
    codes_train: Any,
    factors_train: Any,
    codes_test: Any = None,
    factors_test: Any = None,
    continuous: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """The score matrix ``(D, K)`` (disentanglement_lib's ``compute_score_matrix``); see the module docstring.

    Raises:
        ValueError: For mismatched shapes, discrete factors without a test set or with one value in training.
        ImportError: Without scikit-learn (discrete factors).
    """
    mus, ys = check_codes_factors(codes_train, factors_train, "_train")
    check_int("seed", seed)
    n_codes, n_factors = mus.shape[1], ys.shape[1]
    matrix = np.zeros((n_codes, n_factors))
    if continuous:
        for i in range(n_codes):
            for j in range(n_factors):
                cov = np.cov(mus[:, i], ys[:, j], ddof=1)
                var_mu, var_y = cov[0, 0], cov[1, 1]
                matrix[i, j] = cov[0, 1] ** 2 / (var_mu * var_y) if var_mu > 1e-12 else 0.0
        return matrix
    if codes_test is None or factors_test is None:
        raise ValueError("SAP with discrete factors needs test codes and factors (the classifiers' held-out set)")
    mus_test, ys_test = check_held_out(codes_test, factors_test, mus, ys)
    check_factors_vary("SAP", ys)
    svm = require_sklearn("SAP", "svm")
    for i in range(n_codes):
        for j in range(n_factors):
            classifier = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            classifier.fit(mus[:, i : i + 1], ys[:, j])
            matrix[i, j] = np.mean(classifier.predict(mus_test[:, i : i + 1]) == ys_test[:, j])
    return matrix


def top_two_gap(matrix: np.ndarray) -> float:
    """Mean over columns of the gap between the two largest entries (disentanglement_lib's
    ``compute_avg_diff_top_two``).

    Example::

        >>> import numpy as np
        >>> top_two_gap(np.array([[0.9, 0.2], [0.1, 0.6]]))
        0.6
    """
    ordered = np.sort(np.asarray(matrix, dtype=np.float64), axis=0)
    return float(np.mean(ordered[-1, :] - ordered[-2, :]))


def sap(
    codes_train: Any,
    factors_train: Any,
    codes_test: Any = None,
    factors_test: Any = None,
    continuous: bool = False,
    seed: int = 0,
) -> SAPScores:
    """The SAP score of codes against factors (disentanglement_lib's ``_compute_sap``).

    With a ground-truth source, disentanglement_lib's ``compute_sap(num_train, num_test)`` is
    ``rs = numpy.random.RandomState(seed)``, then :func:`~lightning_vae.functional.interventional.sample_codes`
    ``(source, encode, num_train, rs)`` and ``(..., num_test, rs)``, then this.

    Args:
        codes_train: Codes ``(N, D)`` with ``D >= 2``.
        factors_train: Their integer factors ``(N, K)``.
        codes_test: Held-out codes (discrete factors).
        factors_test: Their factors.
        continuous: Treat the factors as continuous (squared correlation on the training codes).
        seed: ``random_state`` of the classifiers.

    Raises:
        ValueError: For fewer than two code dimensions, and see :func:`sap_matrix`.

    Example::

        >>> import numpy as np
        >>> f = np.stack(np.meshgrid(np.arange(4), np.arange(5), indexing="ij"), -1).reshape(-1, 2)
        >>> round(sap(f.astype(float), f, continuous=True).score, 6)  # each factor read from its own dimension
        1.0
    """
    matrix = sap_matrix(codes_train, factors_train, codes_test, factors_test, continuous, seed)
    if matrix.shape[0] < 2:
        raise ValueError(f"SAP needs at least 2 code dimensions, got {matrix.shape[0]}")
    return SAPScores(top_two_gap(matrix), matrix)


__all__ = ["SAPScores", "sap", "sap_matrix", "top_two_gap"]
