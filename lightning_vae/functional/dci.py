"""DCI: disentanglement, completeness and informativeness of codes (Eastwood & Williams 2018).

An importance matrix ``R`` ``(D, K)`` says how much code dimension ``d`` is used to predict factor ``k``:

- ``"gbt"`` (the default, as disentanglement_lib's ``compute_importance_gbt``): one
  ``sklearn.ensemble.GradientBoostingClassifier`` per factor on the codes, ``R[:, k]`` its feature importances;
  informativeness is the classifiers' accuracy on the training and test codes (higher is better);
- ``"lasso"`` (Eastwood & Williams' linear regressor, as cianeastwood/qedr): codes and factors standardised with
  the training set's mean and standard deviation, one ``sklearn.linear_model.Lasso(alpha)`` per factor, ``R[:, k]``
  the absolute weights; informativeness is the normalised root-mean-square error of the prediction (an error:
  lower is better), averaged over factors.

Disentanglement is ``sum_d rho_d (1 - H_K(R[d] / sum R[d]))`` with ``rho_d = sum_k R[d, k] / sum R`` and
completeness ``sum_k rho_k (1 - H_D(R[:, k] / sum R[:, k]))`` (entropies in base ``K`` and ``D``, ``1e-11`` added
to ``R`` as disentanglement_lib does; its completeness weighs factors by their share of ``R``, where qedr takes the
plain mean).

Conventions: codes and factors are ``(N, D)`` and ``(N, K)`` (disentanglement_lib's arrays are transposed); the
classifiers and regressors are seeded (``random_state=seed``), where disentanglement_lib leaves the trees to the
global NumPy state (which changes their result only through ties).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
from torch import Tensor

from lightning_vae.checks import check_choice, check_float, check_int
from lightning_vae.functional.disentanglement import require_sklearn

#: How the importance matrix is obtained.
Importance = Literal["gbt", "lasso"]


class DCIScores(NamedTuple):
    """DCI of a representation."""

    #: Disentanglement in [0, 1].
    disentanglement: float
    #: Completeness in [0, 1].
    completeness: float
    #: Mean accuracy (``"gbt"``) or normalised RMSE (``"lasso"``) on the training codes.
    informativeness_train: float
    #: The same on the test codes.
    informativeness_test: float
    #: The importance matrix ``(D, K)``.
    importance: np.ndarray


def as_array(name: str, value: Any, dtype: Any = np.float64) -> np.ndarray:
    """A tensor or array-like as a NumPy array of ``dtype`` (on the host)."""
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    if dtype is np.int64:
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"Expected `{name}` to hold integer factors, got {array.dtype}")
        return array.astype(np.int64, copy=False)
    return array.astype(dtype, copy=False)


def check_codes_factors(codes: Any, factors: Any, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``codes`` ``(N, D)`` float64 and integer ``factors`` ``(N, K)`` of the same examples, as arrays."""
    c, f = as_array(f"codes{what}", codes), as_array(f"factors{what}", factors, np.int64)
    if c.ndim != 2 or f.ndim != 2 or c.shape[0] != f.shape[0] or c.shape[0] < 1:
        raise ValueError(
            f"Expected codes{what} (N, D) and factors{what} (N, K) with the same N >= 1, got {c.shape} and {f.shape}"
        )
    return c, f


def check_held_out(
    codes_test: Any, factors_test: Any, codes_train: np.ndarray, factors_train: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out codes and factors as :func:`check_codes_factors` gives them, with the training ones' columns.

    Raises:
        ValueError: For codes or factors that are not ``(M, D)`` and ``(M, K)`` of the training ``D`` and ``K``.
    """
    x_test, y_test = check_codes_factors(codes_test, factors_test, "_test")
    if x_test.shape[1] != codes_train.shape[1] or y_test.shape[1] != factors_train.shape[1]:
        raise ValueError(
            f"Expected test codes and factors shaped as the training ones, got {x_test.shape}, {y_test.shape}"
        )
    return x_test, y_test


def check_factors_vary(metric: str, factors: np.ndarray) -> None:
    """Check that every factor (column of ``factors`` ``(N, K)``) takes two values or more in the training set.

    Raises:
        ValueError: Naming ``metric`` and the factors that take one value.
    """
    constant = [k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size < 2]
    if constant:
        raise ValueError(f"{metric} needs every factor to vary in the training set; factors {constant} take one value")


def _entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy in base ``base`` of each column of non-negative weights ``p`` (normalised), as scipy.stats.entropy."""
    p = p / p.sum(axis=0, keepdims=True)
    return -(p * np.log(p)).sum(axis=0) / np.log(base)


def disentanglement_score(importance: np.ndarray) -> float:
    """Disentanglement of an importance matrix ``(D, K)``, K >= 2 (disentanglement_lib's ``disentanglement``).

    Example::

        >>> import numpy as np
        >>> round(disentanglement_score(np.eye(3)), 6)
        1.0
    """
    r = np.asarray(importance, dtype=np.float64)
    per_code = 1.0 - _entropy(r.T + 1e-11, base=r.shape[1])
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per_code * r.sum(axis=1) / r.sum()))


def completeness_score(importance: np.ndarray) -> float:
    """Completeness of an importance matrix ``(D, K)``, D >= 2 (disentanglement_lib's ``completeness``).

    Example::

        >>> import numpy as np
        >>> round(completeness_score(np.ones((4, 2))), 6)  # every factor spread over every code
        0.0
    """
    r = np.asarray(importance, dtype=np.float64)
    per_factor = 1.0 - _entropy(r + 1e-11, base=r.shape[0])
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per_factor * r.sum(axis=0) / r.sum()))


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def _nrmse(predicted: np.ndarray, target: np.ndarray) -> float:
    """qedr's ``nrmse``: the root-mean-square error over the target's standard deviation."""
    return float(np.sqrt(np.mean((predicted - target) ** 2)) / np.std(target))


def dci_importance(
    codes_train: Any,
    factors_train: Any,
    codes_test: Any,
    factors_test: Any,
    importance: Importance = "gbt",
    seed: int = 0,
    lasso_alpha: float = 0.02,
) -> tuple[np.ndarray, float, float]:
    """The importance matrix ``(D, K)`` and the training and test informativeness (see the module docstring).

    Raises:
        ValueError: For mismatched shapes, fewer than two code dimensions or factors, or a factor that takes one
            value in the training set.
        ImportError: Without scikit-learn.
    """
    x_train, y_train = check_codes_factors(codes_train, factors_train, "_train")
    x_test, y_test = check_held_out(codes_test, factors_test, x_train, y_train)
    if x_train.shape[1] < 2 or y_train.shape[1] < 2:
        raise ValueError(
            f"DCI needs at least 2 code dimensions and 2 factors, got {x_train.shape[1]} and {y_train.shape[1]}"
        )
    check_factors_vary("DCI", y_train)
    check_choice("importance", importance, Importance)
    check_int("seed", seed)
    n_codes, n_factors = x_train.shape[1], y_train.shape[1]
    matrix = np.zeros((n_codes, n_factors), dtype=np.float64)
    train_scores, test_scores = [], []
    if importance == "gbt":
        ensemble = require_sklearn("DCI", "ensemble")
        for k in range(n_factors):
            model = ensemble.GradientBoostingClassifier(random_state=seed)
            model.fit(x_train, y_train[:, k])
            matrix[:, k] = np.abs(model.feature_importances_)
            train_scores.append(np.mean(model.predict(x_train) == y_train[:, k]))
            test_scores.append(np.mean(model.predict(x_test) == y_test[:, k]))
    else:
        linear_model = require_sklearn("DCI", "linear_model")
        check_float("lasso_alpha", lasso_alpha, low=0.0, strict_low=True)
        xs_train, xs_test = _standardise(x_train, x_test)
        ys_train, ys_test = _standardise(y_train.astype(np.float64), y_test.astype(np.float64))
        for k in range(n_factors):
            model = linear_model.Lasso(alpha=lasso_alpha, random_state=seed)
            model.fit(xs_train, ys_train[:, k])
            matrix[:, k] = np.abs(model.coef_)
            train_scores.append(_nrmse(model.predict(xs_train), ys_train[:, k]))
            test_scores.append(_nrmse(model.predict(xs_test), ys_test[:, k]))
    return matrix, float(np.mean(train_scores)), float(np.mean(test_scores))


def dci(
    codes_train: Any,
    factors_train: Any,
    codes_test: Any,
    factors_test: Any,
    importance: Importance = "gbt",
    seed: int = 0,
    lasso_alpha: float = 0.02,
) -> DCIScores:
    """DCI of codes against discrete factors, from a training and a test set (disentanglement_lib's ``_compute_dci``).

    With a ground-truth source, disentanglement_lib's ``compute_dci(num_train, num_test)`` is
    ``rs = numpy.random.RandomState(seed)``, then :func:`~lightning_vae.functional.interventional.sample_codes`
    ``(source, encode, num_train, rs)`` and ``(..., num_test, rs)`` (batches of 16), then this.

    Args:
        codes_train: Codes ``(N, D)`` (usually posterior means) for fitting.
        factors_train: Their integer factors ``(N, K)``.
        codes_test: Codes ``(M, D)`` held out.
        factors_test: Their factors ``(M, K)``.
        importance: ``"gbt"`` or ``"lasso"``.
        seed: ``random_state`` of the classifiers or regressors.
        lasso_alpha: The Lasso's penalty (``"lasso"`` only).

    Raises:
        ValueError: See :func:`dci_importance`.
        ImportError: Without scikit-learn.

    Example::

        >>> import numpy as np
        >>> f = np.stack(np.meshgrid(np.arange(4), np.arange(5), indexing="ij"), -1).reshape(-1, 2)
        >>> scores = dci(f + 0.01, f, f, f)  # each factor read from one code dimension
        >>> round(scores.disentanglement, 3), round(scores.completeness, 3), scores.informativeness_test
        (1.0, 1.0, 1.0)
    """
    matrix, train, test = dci_importance(
        codes_train, factors_train, codes_test, factors_test, importance, seed, lasso_alpha
    )
    return DCIScores(disentanglement_score(matrix), completeness_score(matrix), train, test, matrix)


def split_train_test(n: int, train_fraction: float) -> int:
    """How many of ``n`` examples go to training: ``ceil(n * train_fraction)`` (disentanglement_lib's
    ``split_train_test``, which takes the first ones).

    Example::

        >>> split_train_test(10, 0.8)
        8
    """
    check_int("n", n, low=0)
    check_float("train_fraction", train_fraction, low=0.0, high=1.0)
    return int(np.ceil(n * train_fraction))


__all__ = [
    "DCIScores",
    "Importance",
    "completeness_score",
    "dci",
    "dci_importance",
    "disentanglement_score",
    "split_train_test",
]
