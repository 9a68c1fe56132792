"""Metrics that sample from a ground-truth source: codes of random factors, the FactorVAE score (Kim & Mnih 2018) and
the β-VAE score (Higgins et al. 2017), each drawing what disentanglement_lib draws from the same seed.

The source is any :class:`~lightning_vae.data.ground_truth.GroundTruthData` (the shapes or dSprites data modules);
``encode`` maps images ``(n, C, H, W)`` to codes ``(n, D)`` (usually the posterior means,
:func:`posterior_means`). Every random draw comes from one ``numpy.random.RandomState(seed)`` in
disentanglement_lib's order (``random_state.randint`` for the fixed factor, ``sample_factors`` per group); images
are rendered and encoded in chunks of ``chunk_size`` images after the draws, which gives the same codes because
rendering draws nothing.

Conventions where disentanglement_lib differs: the FactorVAE score reports the number of active dimensions
(disentanglement_lib's ``num_active_dims`` is ``len`` of a boolean mask, the number of all dimensions); the β-VAE
score's logistic regression is scikit-learn's default of the installed version (disentanglement_lib ran an older
one), fitted as disentanglement_lib fits it, with ``random_state`` the metric's ``RandomState``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from lightning_vae.checks import check_float, check_int
from lightning_vae.data.ground_truth import GroundTruthData, require_ground_truth
from lightning_vae.functional.disentanglement import require_sklearn

#: Images ``(n, C, H, W)`` -> codes ``(n, D)``.
Encode = Callable[[Tensor], Tensor]


class FactorVAEScores(NamedTuple):
    """The FactorVAE score: the majority-vote classifier's accuracy on the training and evaluation votes."""

    train_accuracy: float
    eval_accuracy: float
    #: Code dimensions whose standard deviation over the data reaches the pruning threshold.
    active_dims: int


class BetaVAEScores(NamedTuple):
    """The β-VAE score: the logistic regression's accuracy on the training and evaluation points."""

    train_accuracy: float
    eval_accuracy: float


def posterior_means(module: Any, device: torch.device | str | None = None) -> Encode:
    """An ``encode`` for these metrics: ``module.encode(x).mean`` in eval mode without gradients, on the host.

    ``module`` is anything with ``encode(x) -> distribution`` (a ``VAE``); images are moved to ``device`` (default:
    the module's parameters' device).
    """
    if device is None:
        device = next(iter(module.parameters())).device if hasattr(module, "parameters") else "cpu"

    def encode(x: Tensor) -> Tensor:
        was_training = getattr(module, "training", False)
        module.eval()
        try:
            with torch.no_grad():
                return module.encode(x.to(device)).mean.detach().cpu()
        finally:
            module.train(was_training)

    return encode


def encode_in_chunks(source: GroundTruthData, encode: Encode, factors: np.ndarray, chunk_size: int) -> np.ndarray:
    """Render ``factors`` ``(n, K)`` and encode them ``chunk_size`` images at a time: codes ``(n, D)`` float64."""
    check_int("chunk_size", chunk_size, low=1)
    codes = []
    for start in range(0, factors.shape[0], chunk_size):
        out = encode(source.render(factors[start : start + chunk_size]))
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != min(chunk_size, factors.shape[0] - start):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"Expected `encode` to return codes (n, D) for n images, got {got}")
        codes.append(out.detach().cpu().double().numpy())
    if not codes:
        raise ValueError("Expected at least one factor combination to encode")
    return np.concatenate(codes)


def sample_codes(
    source: GroundTruthData,
    encode: Encode,
    n: int,
    random_state: np.random.RandomState,
    batch_size: int = 16,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(n, D)`` and factors ``(n, K)`` of ``n`` random factor combinations.

    The draws of disentanglement_lib's ``generate_batch_factor_code``: ``sample_factors(batch_size)`` until ``n``
    (the last batch smaller), so the same ``random_state`` gives the same factors.
    """
    require_ground_truth(source, "sample_codes")
    check_int("n", n, low=1)
    check_int("batch_size", batch_size, low=1)
    draws = [source.sample_factors(min(batch_size, n - i), random_state) for i in range(0, n, batch_size)]
    factors = np.concatenate(draws).astype(np.int64)
    return encode_in_chunks(source, encode, factors, chunk_size), factors


# ------------------------------------------------------------------ FactorVAE score
def active_dimensions(variances: np.ndarray, threshold: float) -> np.ndarray:
    """Dimensions whose standard deviation reaches ``threshold`` (disentanglement_lib's ``_prune_dims``)."""
    return np.sqrt(np.asarray(variances, dtype=np.float64)) >= threshold


def factor_vae_votes(
    local_variances: np.ndarray,
    fixed_factor: np.ndarray,
    global_variances: np.ndarray,
    active: np.ndarray,
    n_factors: int,
) -> np.ndarray:
    """The votes ``(K, D)``: each group votes for (its fixed factor, the active dimension of least normalised variance).

    ``local_variances`` ``(G, D)`` are the groups' code variances (``ddof=1``); the vote's column is the position
    among the active dimensions, as disentanglement_lib's ``np.argmin(local[active] / global[active])``.
    """
    local = np.asarray(local_variances, dtype=np.float64)
    ratio = local[:, active] / np.asarray(global_variances, dtype=np.float64)[active]
    argmin = np.argmin(ratio, axis=1)
    votes = np.zeros((n_factors, local.shape[1]), dtype=np.int64)
    np.add.at(votes, (np.asarray(fixed_factor, dtype=np.int64), argmin), 1)
    return votes


def majority_vote_accuracy(train_votes: np.ndarray, eval_votes: np.ndarray) -> tuple[float, float]:
    """The majority-vote classifier (each dimension predicts its most voted factor) and its accuracies."""
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(train_votes.shape[1])
    train = float(np.sum(train_votes[classifier, columns]) / np.sum(train_votes))
    evaluation = float(np.sum(eval_votes[classifier, columns]) / np.sum(eval_votes))
    return train, evaluation


def fixed_factor_groups(
    source: GroundTruthData, n_groups: int, batch_size: int, random_state: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """``n_groups`` groups of ``batch_size`` factor combinations sharing one random factor: the fixed factors
    ``(G,)`` and the groups ``(G, B, K)``, drawn as disentanglement_lib's FactorVAE score draws them."""
    n_factors = len(source.factor_sizes)
    fixed = np.zeros(n_groups, dtype=np.int64)
    groups = []
    for g in range(n_groups):
        fixed[g] = random_state.randint(n_factors)
        factors = source.sample_factors(batch_size, random_state)
        factors[:, fixed[g]] = factors[0, fixed[g]]
        groups.append(factors)
    return fixed, np.stack(groups)


def group_variances(codes: np.ndarray) -> np.ndarray:
    """Each group's code variances (``ddof=1``), ``(G, B, D)`` -> ``(G, D)``: the FactorVAE score's statistic."""
    return np.var(np.asarray(codes, dtype=np.float64), axis=1, ddof=1)


def _encoded_group_variances(
    source: GroundTruthData, encode: Encode, groups: np.ndarray, chunk_size: int
) -> np.ndarray:
    n_groups, batch_size, _ = groups.shape
    per_chunk = max(1, chunk_size // batch_size) * batch_size
    codes = encode_in_chunks(source, encode, groups.reshape(n_groups * batch_size, -1), per_chunk)
    return group_variances(codes.reshape(n_groups, batch_size, -1))


def factor_vae_score(
    source: GroundTruthData,
    encode: Encode,
    batch_size: int = 64,
    n_train: int = 10000,
    n_eval: int = 5000,
    n_variance: int = 10000,
    prune_threshold: float = 0.05,
    seed: int = 0,
    chunk_size: int = 1024,
) -> FactorVAEScores:
    """The FactorVAE score (Kim & Mnih 2018): which factor was held fixed, told from the least-varying code.

    The code variances of ``n_variance`` random images normalise each dimension; dimensions with a standard
    deviation below ``prune_threshold`` are left out. Each of ``n_train`` groups of ``batch_size`` images shares one
    random factor; its vote goes to (that factor, the active dimension of least normalised variance). The majority
    vote of each dimension is the classifier; its accuracy on ``n_eval`` further groups is the score. The defaults
    are those of Locatello et al. 2019 (disentanglement_lib's ``factor_vae_metric.gin``, threshold 0.05).

    Args:
        source: Data with known factors.
        encode: Images -> codes.
        batch_size: Images per group.
        n_train: Groups voting for the classifier.
        n_eval: Groups it is scored on.
        n_variance: Images for the global variances.
        prune_threshold: Least standard deviation of an active dimension.
        seed: Seed of the ``RandomState`` all draws come from.
        chunk_size: Most images rendered and encoded at once.

    Returns:
        Zeros when no dimension is active.
    """
    require_ground_truth(source, "factor_vae_score")
    for name, value in (("batch_size", batch_size), ("n_train", n_train), ("n_eval", n_eval)):
        check_int(name, value, low=1)
    check_int("n_variance", n_variance, low=2)
    check_float("prune_threshold", prune_threshold, low=0.0)
    random_state = np.random.RandomState(check_int("seed", seed))
    variance_codes = encode_in_chunks(source, encode, source.sample_factors(n_variance, random_state), chunk_size)
    global_variances = np.var(variance_codes, axis=0, ddof=1)
    active = active_dimensions(global_variances, prune_threshold)
    if not active.any():
        return FactorVAEScores(0.0, 0.0, 0)
    n_factors = len(source.factor_sizes)
    votes = []
    for n_groups in (n_train, n_eval):
        fixed, groups = fixed_factor_groups(source, n_groups, batch_size, random_state)
        local = _encoded_group_variances(source, encode, groups, chunk_size)
        votes.append(factor_vae_votes(local, fixed, global_variances, active, n_factors))
    train, evaluation = majority_vote_accuracy(*votes)
    return FactorVAEScores(train, evaluation, int(active.sum()))


# ------------------------------------------------------------------ β-VAE score
def pair_groups(
    source: GroundTruthData, n_points: int, batch_size: int, random_state: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """The β-VAE score's draws (disentanglement_lib's ``_generate_training_sample``): for each point, the shared
    factor ``(n,)`` and two groups of ``batch_size`` combinations that agree on it ``(n, 2, B, K)``."""
    n_factors = len(source.factor_sizes)
    labels = np.zeros(n_points, dtype=np.int64)
    pairs = []
    for i in range(n_points):
        labels[i] = random_state.randint(n_factors)
        first = source.sample_factors(batch_size, random_state)
        second = source.sample_factors(batch_size, random_state)
        second[:, labels[i]] = first[:, labels[i]]
        pairs.append(np.stack([first, second]))
    return labels, np.stack(pairs)


def _pair_features(
    source: GroundTruthData, encode: Encode, n_points: int, batch_size: int, random_state: Any, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(n,)`` and features ``(n, D)`` of ``n_points`` fresh points."""
    labels, factors = pair_groups(source, n_points, batch_size, random_state)
    per_chunk = max(1, chunk_size // (2 * batch_size)) * 2 * batch_size
    codes = encode_in_chunks(source, encode, factors.reshape(n_points * 2 * batch_size, -1), per_chunk)
    codes = codes.reshape(n_points, 2, batch_size, -1)
    return labels, beta_vae_features(codes[:, 0], codes[:, 1])


def beta_vae_features(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """The β-VAE score's points: ``mean_b |z_a - z_b|`` over each group's pairs, ``(G, B, D)`` -> ``(G, D)``."""
    return np.mean(np.abs(np.asarray(codes_a, dtype=np.float64) - np.asarray(codes_b, dtype=np.float64)), axis=1)


def beta_vae_classifier(features: np.ndarray, labels: np.ndarray, random_state: Any = None) -> Any:
    """``sklearn.linear_model.LogisticRegression(random_state=random_state)`` fitted on the β-VAE score's points."""
    linear_model = require_sklearn("The β-VAE score", "linear_model")
    model = linear_model.LogisticRegression(random_state=random_state)
    model.fit(features, labels)
    return model


def beta_vae_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    random_state: Any = None,
) -> tuple[float, float]:
    """The accuracies of :func:`beta_vae_classifier` on its training points and on the evaluation points."""
    model = beta_vae_classifier(train_features, train_labels, random_state)
    train = float(np.mean(model.predict(train_features) == train_labels))
    return train, float(model.score(eval_features, eval_labels))


def beta_vae_score(
    source: GroundTruthData,
    encode: Encode,
    batch_size: int = 64,
    n_train: int = 10000,
    n_eval: int = 5000,
    seed: int = 0,
    chunk_size: int = 1024,
) -> BetaVAEScores:
    """The β-VAE score (Higgins et al. 2017): which factor two groups of images share, told by a linear classifier.

    Each point draws a factor and two groups of ``batch_size`` factor combinations that agree on it; its feature is
    the mean absolute difference of the groups' codes. A logistic regression fitted on ``n_train`` points is scored
    on ``n_eval`` further points (disentanglement_lib's ``compute_beta_vae_sklearn``, defaults of its
    ``beta_vae_sklearn.gin``).
    """
    require_ground_truth(source, "beta_vae_score")
    for name, value in (("batch_size", batch_size), ("n_train", n_train), ("n_eval", n_eval)):
        check_int(name, value, low=1)
    random_state = np.random.RandomState(check_int("seed", seed))
    train_labels, train_points = _pair_features(source, encode, n_train, batch_size, random_state, chunk_size)
    # The classifier is fitted before the evaluation points are drawn, with the same RandomState (as the reference).
    model = beta_vae_classifier(train_points, train_labels, random_state)
    train = float(np.mean(model.predict(train_points) == train_labels))
    eval_labels, eval_points = _pair_features(source, encode, n_eval, batch_size, random_state, chunk_size)
    return BetaVAEScores(train, float(model.score(eval_points, eval_labels)))


__all__ = [
    "BetaVAEScores",
    "Encode",
    "FactorVAEScores",
    "active_dimensions",
    "beta_vae_accuracy",
    "beta_vae_classifier",
    "beta_vae_features",
    "beta_vae_score",
    "encode_in_chunks",
    "factor_vae_score",
    "factor_vae_votes",
    "fixed_factor_groups",
    "group_variances",
    "majority_vote_accuracy",
    "pair_groups",
    "posterior_means",
    "sample_codes",
]
