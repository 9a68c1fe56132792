"""google-research/disentanglement_lib's metrics re-implemented as the tests' reference, and a small ground-truth
source whose codes are a fixed function of the factors.

The reference follows ``evaluation/metrics/{utils,dci,sap_score,factor_vae,beta_vae,mig}.py`` line by line (arrays
``(num_codes, num_points)`` as there). Where disentanglement_lib leaves scikit-learn's estimators to the global NumPy
random state, the reference seeds that state with ``seed`` right before each fit, which is what the code under test's
``random_state=seed`` amounts to (an estimator draws from ``RandomState(seed)`` either way).
"""

from __future__ import annotations

import numpy as np
import sklearn.metrics
import torch
from sklearn import ensemble, linear_model, svm

from lightning_vae.data.ground_truth import sample_uniform_factors


class ToySource:
    """Factors (3, 4, 5); the "image" of a factor combination is the combination itself, ``(n, 1, 1, 3)`` float64."""

    factor_names = ("a", "b", "c")
    factor_sizes = (3, 4, 5)

    def sample_factors(self, n, random_state):
        return sample_uniform_factors(self.factor_sizes, n, random_state)

    def render(self, factors):
        return torch.as_tensor(np.asarray(factors), dtype=torch.float64).view(-1, 1, 1, 3)


def toy_encode(x: torch.Tensor) -> torch.Tensor:
    """Codes of the toy images: two nearly pure dimensions, one mixed, one hashed from all factors."""
    v = x.reshape(-1, 3).double()
    return torch.stack(
        [
            v[:, 0] + 0.3 * torch.sin(7 * v[:, 1] + 3 * v[:, 2]),
            0.5 * v[:, 1] + 0.2 * v[:, 2],
            v[:, 2] + 0.1 * torch.cos(11 * v[:, 0]),
            torch.sin(13 * v[:, 0] + 17 * v[:, 1] + 19 * v[:, 2]),
        ],
        dim=1,
    )


class ReferenceData:
    """disentanglement_lib's ``GroundTruthData`` over a source keeping this package's interface."""

    def __init__(self, source) -> None:
        self.source = source

    @property
    def num_factors(self):
        return len(self.source.factor_sizes)

    def sample_factors(self, num, random_state):
        return self.source.sample_factors(num, random_state)

    def sample_observations_from_factors(self, factors, random_state):
        return self.source.render(factors).numpy()

    def sample(self, num, random_state):
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num, random_state):
        return self.sample(num, random_state)[1]


def representation(encode):
    """disentanglement_lib's ``representation_function``: NumPy observations -> NumPy codes."""
    return lambda observations: encode(torch.from_numpy(np.asarray(observations))).numpy()


# ------------------------------------------------------------------ utils.py
def generate_batch_factor_code(ground_truth_data, representation_function, num_points, random_state, batch_size):
    representations = None
    factors = None
    i = 0
    while i < num_points:
        num_points_iter = min(num_points - i, batch_size)
        current_factors, current_observations = ground_truth_data.sample(num_points_iter, random_state)
        if i == 0:
            factors = current_factors
            representations = representation_function(current_observations)
        else:
            factors = np.vstack((factors, current_factors))
            representations = np.vstack((representations, representation_function(current_observations)))
        i += num_points_iter
    return np.transpose(representations), np.transpose(factors)


def obtain_representation(observations, representation_function, batch_size):
    representations = None
    num_points = observations.shape[0]
    i = 0
    while i < num_points:
        num_points_iter = min(num_points - i, batch_size)
        current_observations = observations[i : i + num_points_iter]
        if i == 0:
            representations = representation_function(current_observations)
        else:
            representations = np.vstack((representations, representation_function(current_observations)))
        i += num_points_iter
    return np.transpose(representations)


def split_train_test(observations, train_percentage):
    num_labelled_samples = observations.shape[1]
    num_labelled_samples_train = int(np.ceil(num_labelled_samples * train_percentage))
    return observations[:, :num_labelled_samples_train], observations[:, num_labelled_samples_train:]


def histogram_discretize(target, num_bins):
    discretized = np.zeros_like(target)
    for i in range(target.shape[0]):
        discretized[i, :] = np.digitize(target[i, :], np.histogram(target[i, :], num_bins)[1][:-1])
    return discretized


def discrete_mutual_info(mus, ys):
    m = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            m[i, j] = sklearn.metrics.mutual_info_score(ys[j, :], mus[i, :])
    return m


def discrete_entropy(ys):
    h = np.zeros(ys.shape[0])
    for j in range(ys.shape[0]):
        h[j] = sklearn.metrics.mutual_info_score(ys[j, :], ys[j, :])
    return h


# ------------------------------------------------------------------ mig.py
def compute_mig(ground_truth_data, representation_function, random_state, num_train, batch_size=16, num_bins=20):
    mus_train, ys_train = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    discretized_mus = histogram_discretize(mus_train, num_bins)
    m = discrete_mutual_info(discretized_mus, ys_train)
    entropy = discrete_entropy(ys_train)
    sorted_m = np.sort(m, axis=0)[::-1]
    return np.mean(np.divide(sorted_m[0, :] - sorted_m[1, :], entropy[:]))


# ------------------------------------------------------------------ dci.py
def compute_importance_gbt(x_train, y_train, x_test, y_test, seed):
    num_factors = y_train.shape[0]
    num_codes = x_train.shape[0]
    importance_matrix = np.zeros(shape=[num_codes, num_factors], dtype=np.float64)
    train_loss, test_loss = [], []
    for i in range(num_factors):
        model = ensemble.GradientBoostingClassifier()
        np.random.seed(seed)
        model.fit(x_train.T, y_train[i, :])
        importance_matrix[:, i] = np.abs(model.feature_importances_)
        train_loss.append(np.mean(model.predict(x_train.T) == y_train[i, :]))
        test_loss.append(np.mean(model.predict(x_test.T) == y_test[i, :]))
    return importance_matrix, np.mean(train_loss), np.mean(test_loss)


def _entropy(pk, base):
    import scipy.stats

    return scipy.stats.entropy(pk, base=base)


def disentanglement(importance_matrix):
    per_code = 1.0 - _entropy(importance_matrix.T + 1e-11, base=importance_matrix.shape[1])
    if importance_matrix.sum() == 0.0:
        importance_matrix = np.ones_like(importance_matrix)
    code_importance = importance_matrix.sum(axis=1) / importance_matrix.sum()
    return np.sum(per_code * code_importance)


def completeness(importance_matrix):
    per_factor = 1.0 - _entropy(importance_matrix + 1e-11, base=importance_matrix.shape[0])
    if importance_matrix.sum() == 0.0:
        importance_matrix = np.ones_like(importance_matrix)
    factor_importance = importance_matrix.sum(axis=0) / importance_matrix.sum()
    return np.sum(per_factor * factor_importance)


def compute_dci_from_codes(mus_train, ys_train, mus_test, ys_test, seed=0):
    importance_matrix, train_err, test_err = compute_importance_gbt(mus_train, ys_train, mus_test, ys_test, seed)
    return {
        "informativeness_train": train_err,
        "informativeness_test": test_err,
        "disentanglement": disentanglement(importance_matrix),
        "completeness": completeness(importance_matrix),
        "importance_matrix": importance_matrix,
    }


def compute_dci(ground_truth_data, representation_function, random_state, num_train, num_test, batch_size=16, seed=0):
    mus_train, ys_train = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    mus_test, ys_test = generate_batch_factor_code(
        ground_truth_data, representation_function, num_test, random_state, batch_size
    )
    return compute_dci_from_codes(mus_train, ys_train, mus_test, ys_test, seed)


# ------------------------------------------------------------------ sap_score.py
def compute_score_matrix(mus, ys, mus_test, ys_test, continuous_factors, seed=0):
    num_latents = mus.shape[0]
    num_factors = ys.shape[0]
    score_matrix = np.zeros([num_latents, num_factors])
    for i in range(num_latents):
        for j in range(num_factors):
            mu_i = mus[i, :]
            y_j = ys[j, :]
            if continuous_factors:
                cov_mu_i_y_j = np.cov(mu_i, y_j, ddof=1)
                cov_mu_y = cov_mu_i_y_j[0, 1] ** 2
                var_mu = cov_mu_i_y_j[0, 0]
                var_y = cov_mu_i_y_j[1, 1]
                if var_mu > 1e-12:
                    score_matrix[i, j] = cov_mu_y * 1.0 / (var_mu * var_y)
                else:
                    score_matrix[i, j] = 0.0
            else:
                mu_i_test = mus_test[i, :]
                y_j_test = ys_test[j, :]
                classifier = svm.LinearSVC(C=0.01, class_weight="balanced")
                np.random.seed(seed)
                classifier.fit(mu_i[:, np.newaxis], y_j)
                pred = classifier.predict(mu_i_test[:, np.newaxis])
                score_matrix[i, j] = np.mean(pred == y_j_test)
    return score_matrix


def compute_avg_diff_top_two(matrix):
    sorted_matrix = np.sort(matrix, axis=0)
    return np.mean(sorted_matrix[-1, :] - sorted_matrix[-2, :])


def compute_sap(
    ground_truth_data, representation_function, random_state, num_train, num_test, continuous_factors, batch_size=16
):
    mus, ys = generate_batch_factor_code(
        ground_truth_data, representation_function, num_train, random_state, batch_size
    )
    mus_test, ys_test = generate_batch_factor_code(
        ground_truth_data, representation_function, num_test, random_state, batch_size
    )
    matrix = compute_score_matrix(mus, ys, mus_test, ys_test, continuous_factors)
    return compute_avg_diff_top_two(matrix), matrix


# ------------------------------------------------------------------ factor_vae.py
def _prune_dims(variances, threshold=0.0):
    return np.sqrt(variances) >= threshold


def _compute_variances(ground_truth_data, representation_function, batch_size, random_state, eval_batch_size=64):
    observations = ground_truth_data.sample_observations(batch_size, random_state)
    representations = obtain_representation(observations, representation_function, eval_batch_size)
    representations = np.transpose(representations)
    return np.var(representations, axis=0, ddof=1)


def _generate_factor_vae_sample(
    ground_truth_data, representation_function, batch_size, random_state, global_variances, active_dims
):
    factor_index = random_state.randint(ground_truth_data.num_factors)
    factors = ground_truth_data.sample_factors(batch_size, random_state)
    factors[:, factor_index] = factors[0, factor_index]
    observations = ground_truth_data.sample_observations_from_factors(factors, random_state)
    representations = representation_function(observations)
    local_variances = np.var(representations, axis=0, ddof=1)
    argmin = np.argmin(local_variances[active_dims] / global_variances[active_dims])
    return factor_index, argmin


def _generate_factor_vae_batch(
    ground_truth_data, representation_function, batch_size, num_points, random_state, global_variances, active_dims
):
    votes = np.zeros((ground_truth_data.num_factors, global_variances.shape[0]), dtype=np.int64)
    for _ in range(num_points):
        factor_index, argmin = _generate_factor_vae_sample(
            ground_truth_data, representation_function, batch_size, random_state, global_variances, active_dims
        )
        votes[factor_index, argmin] += 1
    return votes


def compute_factor_vae(
    ground_truth_data,
    representation_function,
    random_state,
    batch_size,
    num_train,
    num_eval,
    num_variance_estimate,
    prune_threshold,
):
    global_variances = _compute_variances(
        ground_truth_data, representation_function, num_variance_estimate, random_state
    )
    active_dims = _prune_dims(global_variances, prune_threshold)
    scores_dict = {}
    if not active_dims.any():
        scores_dict["train_accuracy"] = 0.0
        scores_dict["eval_accuracy"] = 0.0
        scores_dict["num_active_dims"] = 0
        return scores_dict
    training_votes = _generate_factor_vae_batch(
        ground_truth_data, representation_function, batch_size, num_train, random_state, global_variances, active_dims
    )
    classifier = np.argmax(training_votes, axis=0)
    other_index = np.arange(training_votes.shape[1])
    train_accuracy = np.sum(training_votes[classifier, other_index]) * 1.0 / np.sum(training_votes)
    eval_votes = _generate_factor_vae_batch(
        ground_truth_data, representation_function, batch_size, num_eval, random_state, global_variances, active_dims
    )
    eval_accuracy = np.sum(eval_votes[classifier, other_index]) * 1.0 / np.sum(eval_votes)
    scores_dict["train_accuracy"] = train_accuracy
    scores_dict["eval_accuracy"] = eval_accuracy
    scores_dict["num_active_dims"] = len(active_dims)
    return scores_dict


# ------------------------------------------------------------------ beta_vae.py
def _generate_beta_vae_sample(ground_truth_data, representation_function, batch_size, random_state):
    index = random_state.randint(ground_truth_data.num_factors)
    factors1 = ground_truth_data.sample_factors(batch_size, random_state)
    factors2 = ground_truth_data.sample_factors(batch_size, random_state)
    factors2[:, index] = factors1[:, index]
    observation1 = ground_truth_data.sample_observations_from_factors(factors1, random_state)
    observation2 = ground_truth_data.sample_observations_from_factors(factors2, random_state)
    representation1 = representation_function(observation1)
    representation2 = representation_function(observation2)
    feature_vector = np.mean(np.abs(representation1 - representation2), axis=0)
    return index, feature_vector


def _generate_beta_vae_batch(ground_truth_data, representation_function, batch_size, num_points, random_state):
    points = None
    labels = np.zeros(num_points, dtype=np.int64)
    for i in range(num_points):
        labels[i], feature_vector = _generate_beta_vae_sample(
            ground_truth_data, representation_function, batch_size, random_state
        )
        if points is None:
            points = np.zeros((num_points, feature_vector.shape[0]))
        points[i, :] = feature_vector
    return points, labels


def compute_beta_vae_sklearn(ground_truth_data, representation_function, random_state, batch_size, num_train, num_eval):
    train_points, train_labels = _generate_beta_vae_batch(
        ground_truth_data, representation_function, batch_size, num_train, random_state
    )
    model = linear_model.LogisticRegression(random_state=random_state)
    model.fit(train_points, train_labels)
    train_accuracy = np.mean(model.predict(train_points) == train_labels)
    eval_points, eval_labels = _generate_beta_vae_batch(
        ground_truth_data, representation_function, batch_size, num_eval, random_state
    )
    eval_accuracy = model.score(eval_points, eval_labels)
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy}
