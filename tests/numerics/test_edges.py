"""Property tests of every likelihood, prior and the posterior at the edges of their parameter ranges.

Each family is fuzzed with ``hypothesis`` in float32 and, for the likelihoods and priors, with
float16 and bfloat16 inputs under CPU autocast (the modules compute in float32 from the rounded
inputs). Against float64 NumPy/SciPy references written here from stable formulas, every example
checks:

* the value and every gradient are finite (the references are finite over all the ranges drawn);
* the error is within 1e-3 nats per element plus the float32 rounding of the formula's terms,
  ``ROUNDING * eps32 * scale`` with ``scale`` the sum of the magnitudes the formula adds up;
* the discrete likelihoods (categorical, logistic mixture) sum to 1 within 1e-5 over all 256 values.

Examples are derandomised (the same examples on every run, so a failure reproduces) and bounded,
so the whole file runs in seconds.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_expit, log_softmax, logsumexp
from torch import nn
from torch.distributions import Independent, Normal

from lightning_vae.distributions import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    DiagonalGaussian,
    DiscretizedLogisticMixtureLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
)
from lightning_vae.distributions.posteriors import LOG_VAR_RANGE, as_posterior
from lightning_vae.functional import gaussian_kl
from lightning_vae.objective.terms import kl_terms

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EPS32 = float(np.finfo(np.float32).eps)
#: Allowed float32 rounding, in units of eps32 times the magnitude of the formula's terms.
ROUNDING = 8.0
LOG_2PI = math.log(2 * math.pi)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
#: Largest magnitude drawn for inputs that may be half precision (float16 overflows at 65504).
HALF_MAX = 6e4


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    low32, high32 = float(np.float32(low)), float(np.float32(high))
    return st.floats(low32, high32, width=32, allow_nan=False, allow_infinity=False)


def _array(shape: tuple[int, ...], low: float, high: float) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.float32, shape, elements=_floats(low, high))


def _autocast(dtype: torch.dtype) -> AbstractContextManager[None]:
    return nullcontext() if dtype == torch.float32 else torch.autocast("cpu", dtype=dtype)


def _leaf(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A leaf tensor of ``dtype`` (rounded from the float32 draw) that records its gradient."""
    return torch.from_numpy(np.ascontiguousarray(values)).to(dtype).requires_grad_(True)


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _assert_close(value: torch.Tensor, reference: np.ndarray, scale: np.ndarray, what: str) -> None:
    """Finite, and within 1e-3 nats plus float32 rounding of terms of total magnitude ``scale``."""
    got = _f64(value)
    assert np.isfinite(reference).all(), f"{what}: the reference itself is not finite"
    assert np.isfinite(got).all(), f"{what}: non-finite value {got} where the reference is {reference}"
    err = np.abs(got - reference)
    tol = 1e-3 + ROUNDING * EPS32 * scale
    worst = int(np.argmax(err - tol))
    assert (err <= tol).all(), f"{what}: error {err.flat[worst]:.3g} > {tol.flat[worst]:.3g} (value {got.flat[worst]})"


def _assert_grads_finite(tensors: dict[str, torch.Tensor | None], what: str) -> None:
    for name, t in tensors.items():
        assert t is not None and t.grad is not None, f"{what}: no gradient reached {name}"
        grad = t.grad.float()
        if t.dtype in (torch.float16, torch.bfloat16):
            # The gradient of a half-precision leaf is rounded to its dtype: it may only overflow where
            # the float32 gradient exceeds that dtype's range.
            grad = torch.where(grad.isinf(), torch.zeros_like(grad), grad)
        assert torch.isfinite(grad).all(), f"{what}: non-finite gradient of {name}: {t.grad}"


def _soft_clamp64(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """The documented soft clamp ``high - softplus(high - low - softplus(x - low))`` in float64."""
    return high - np.logaddexp(0.0, (high - low) - np.logaddexp(0.0, x - low))


def _learned_log_scale64(raw: np.ndarray, floor: float) -> np.ndarray:
    return floor + np.logaddexp(0.0, raw - floor)


# --------------------------------------------------------------------------------------------- Bernoulli
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_bernoulli_property(dtype: torch.dtype, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8))
    logits = data.draw(_array((n, 1), -HALF_MAX, HALF_MAX))
    soft = data.draw(st.booleans())
    targets = (
        data.draw(_array((n, 1), 0.0, 1.0))
        if soft
        else data.draw(arrays(np.float32, (n, 1), elements=st.sampled_from([0.0, 1.0])))
    )
    params = _leaf(logits, dtype)
    x = torch.from_numpy(targets)
    with _autocast(dtype):
        value = BernoulliLikelihood().log_prob(x, params)
    value.sum().backward()
    l64, t64 = _f64(params)[:, 0], targets[:, 0].astype(np.float64)
    reference = t64 * log_expit(l64) + (1 - t64) * log_expit(-l64)
    _assert_close(value, reference, np.abs(l64) + 1.0, f"bernoulli {dtype}")
    _assert_grads_finite({"logits": params}, f"bernoulli {dtype}")


# --------------------------------------------------------------------------------- Gaussian and Laplace
def _scale_case(data: st.DataObject, family: str, mode: str) -> tuple[nn.Module, np.ndarray]:
    """The likelihood and its float64 log-scale (σ or b) for a drawn fixed scale or learned raw parameter."""
    cls = GaussianLikelihood if family == "gaussian" else LaplaceLikelihood
    if mode == "fixed":
        scale = data.draw(st.floats(1e-3, 1e3))
        lik = cls(mode, scale)
        return lik, np.array([math.log(scale)])
    shape = (1,) if mode == "per_dim" else None
    lik = cls(mode, 1.0, data_shape=shape)
    raw = data.draw(st.floats(-30.0, 30.0, width=32))
    with torch.no_grad():
        lik.log_scale.fill_(raw)
    return lik, _learned_log_scale64(np.array([raw], dtype=np.float64), lik.min_log_scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", ["gaussian", "laplace"])
@pytest.mark.parametrize("mode", ["fixed", "global", "per_dim"])
@SETTINGS
@given(data=st.data())
def test_location_scale_property(mode: str, family: str, dtype: torch.dtype, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8))
    lik, log_s = _scale_case(data, family, mode)
    x = torch.from_numpy(data.draw(_array((n, 1), -1e4, 1e4)))
    params = _leaf(data.draw(_array((n, 1), -1e4, 1e4)), dtype)
    with _autocast(dtype):
        value = lik.log_prob(x, params)
    value.sum().backward()
    diff = (_f64(x) - _f64(params))[:, 0]
    r = np.abs(diff) * np.exp(-log_s)
    if family == "gaussian":
        reference = -0.5 * r**2 - log_s - 0.5 * LOG_2PI
        scale = r**2 * (3.0 + np.abs(log_s)) + np.abs(log_s) + 1.0
    else:
        reference = -r - log_s - math.log(2.0)
        scale = r * (3.0 + np.abs(log_s)) + np.abs(log_s) + 1.0
    _assert_close(value, reference, scale, f"{family} {mode} {dtype}")
    grads: dict[str, torch.Tensor | None] = {"loc": params}
    if mode != "fixed":
        grads["log_scale"] = lik.log_scale
    _assert_grads_finite(grads, f"{family} {mode} {dtype}")


# ----------------------------------------------------------------------------------------- Categorical
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_categorical_property(dtype: torch.dtype, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 4))
    spread = data.draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3, HALF_MAX]))
    logits = data.draw(_array((n, 256, 1), -spread, spread))
    levels = data.draw(arrays(np.int64, (n, 1), elements=st.integers(0, 255)))
    params = _leaf(logits, dtype)
    x = torch.from_numpy(levels).float() / 255
    lik = CategoricalLikelihood()
    with _autocast(dtype):
        value = lik.log_prob(x, params)
    value.sum().backward()
    l64 = _f64(params)[..., 0]
    log_p = log_softmax(l64, axis=1)
    reference = np.take_along_axis(log_p, levels, axis=1)[:, 0]
    scale = np.abs(reference) + np.abs(l64).max(axis=1) + math.log(256)
    _assert_close(value, reference, scale, f"categorical {dtype}")
    _assert_grads_finite({"logits": params}, f"categorical {dtype}")
    # Normalised over all 256 values.
    all_levels = (torch.arange(256).float() / 255).view(256, 1)
    with torch.no_grad(), _autocast(dtype):  # each example's logits as one leading sample dimension
        totals = lik.log_prob(all_levels, params.detach()[:, None].expand(n, 256, 256, 1)).double().exp().sum(1)
    # Each log-probability carries float32 rounding relative to the logits' magnitude (log-softmax subtracts
    # the log-sum-exp): the sum of the probabilities is off by up to a few eps32 * (max|logit| + log 256).
    tolerance = max(1e-5, 4 * torch.finfo(torch.float32).eps * (float(np.abs(l64).max()) + math.log(256)))
    assert (totals - 1).abs().max() <= tolerance, f"categorical {dtype}: the 256 values sum to {totals}"


# ---------------------------------------------------------------------------------- logistic mixture
def _logistic_mixture64(levels: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log P(level) of a discretized logistic mixture in float64, and the magnitude of its terms.

    Bin ``k`` is ``[(2k - 1)/255 - 1, (2k + 1)/255 - 1]`` of ``[-1, 1]`` with the edge bins open to
    ±infinity. The mass of an interior bin is a difference of logistic CDFs taken on the side of the
    mean where it does not cancel (``log σ(b) + log(1 - σ(a)/σ(b))`` below the mean, the same with
    survival functions above), or by the midpoint rule ``d·σ'(m)`` once the standardised width
    ``d`` is below 1e-4 (relative error under ``d²/24``).
    """
    k_comp = params.shape[1] // 3
    logits, means, log_scales = params[:, :k_comp], params[:, k_comp : 2 * k_comp], params[:, 2 * k_comp :]
    log_scales = np.maximum(log_scales, -7.0)
    k = levels.astype(np.float64)[:, None]
    inv_s = np.exp(-log_scales)
    a = ((2 * k - 1) / 255 - 1 - means) * inv_s
    b = ((2 * k + 1) / 255 - 1 - means) * inv_s
    d = (2 / 255) * inv_s
    with np.errstate(divide="ignore", invalid="ignore"):
        lower_side = log_expit(b) + np.log1p(-np.exp(log_expit(a) - log_expit(b)))
        upper_side = log_expit(-a) + np.log1p(-np.exp(log_expit(-b) - log_expit(-a)))
        m = 0.5 * (a + b)
        midpoint = np.log(d) + log_expit(m) + log_expit(-m)
    interior = np.where(d < 1e-4, midpoint, np.where(a + b > 0, upper_side, lower_side))
    log_mass = np.where(k == 0, log_expit(b), np.where(k == 255, log_expit(-a), interior))
    log_w = log_softmax(logits, axis=1)
    terms = np.abs(a) + np.abs(b) + np.abs(log_w) + np.abs(log_scales) + 1.0
    return logsumexp(log_mass + log_w, axis=1), terms.max(axis=1)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_logistic_mixture_property(dtype: torch.dtype, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 6))
    k = data.draw(st.sampled_from([1, 2, 5]))
    logits = data.draw(_array((n, k), -100.0, 100.0))
    mean_range = data.draw(st.sampled_from([1.5, 50.0, 1e3]))
    means = data.draw(_array((n, k), -mean_range, mean_range))
    low, high = data.draw(st.sampled_from([(-20.0, 100.0), (-8.0, -3.0)]))  # any scale, or sharp ones
    log_scales = data.draw(_array((n, k), low, high))
    levels = data.draw(arrays(np.int64, (n,), elements=st.integers(0, 255)))
    params = _leaf(np.concatenate([logits, means, log_scales], axis=1)[..., None], dtype)
    x = torch.from_numpy(levels).float().view(n, 1) / 255
    lik = DiscretizedLogisticMixtureLikelihood(n_components=k)
    with _autocast(dtype):
        value = lik.log_prob(x, params)
    value.sum().backward()
    reference, scale = _logistic_mixture64(levels, _f64(params)[..., 0])
    _assert_close(value, reference, scale, f"logistic mixture {dtype}")
    _assert_grads_finite({"params": params}, f"logistic mixture {dtype}")


@SETTINGS
@given(
    logits=_array((3,), -30.0, 30.0),
    means=_array((3,), -1.5, 1.5),
    log_scales=_array((3,), -12.0, 12.0),
    at_edge=st.booleans(),
)
def test_logistic_mixture_is_normalised_at_extreme_scales(
    logits: np.ndarray, means: np.ndarray, log_scales: np.ndarray, at_edge: bool
) -> None:
    if at_edge:  # means exactly on bin edges, where a sharp component splits its mass between two bins
        means = (np.round((means + 1) * 127.5 - 0.5) * 2 + 1).astype(np.float32) / np.float32(255) - np.float32(1)
    lik = DiscretizedLogisticMixtureLikelihood(n_components=3)
    x = (torch.arange(256).float() / 255).view(256, 1)
    params = torch.from_numpy(np.concatenate([logits, means, log_scales])).view(1, 9, 1).expand(256, 9, 1)
    total = lik.log_prob(x, params).double().exp().sum()
    assert abs(float(total) - 1.0) <= 1e-5, f"the 256 bins sum to {float(total)}"


@pytest.mark.parametrize(("level", "mean", "log_scale"), [(231, -2.525, -7.0), (128, 0.5, -6.0), (40, -0.9, -3.0)])
def test_logistic_mixture_exact_where_the_mid_bin_approximation_was_used(
    level: int, mean: float, log_scale: float
) -> None:
    """Bins of mass below 1e-5 at sharp scales, where the density-times-width rule is off by log(sinh u / u)."""
    params = torch.tensor([0.0, mean, log_scale]).view(1, 3, 1)
    value = DiscretizedLogisticMixtureLikelihood(n_components=1).log_prob(torch.tensor([[level / 255]]), params)
    reference, scale = _logistic_mixture64(np.array([level]), _f64(params)[..., 0])
    _assert_close(value, reference, scale, "logistic mixture")
    u = (1 / 255) / math.exp(log_scale)
    assert abs(float(value) - reference[0]) < 0.05 * math.log(math.sinh(u) / u)


# ------------------------------------------------------------------------------------------------ priors
def _diag_mixture64(
    z: np.ndarray, logits: np.ndarray, locs: np.ndarray, log_vars: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """log Σ_k w_k N(z; loc_k, exp(log_var_k)) in float64 (log-variances already clamped), and term magnitudes."""
    r2 = (z[:, None, :] - locs[None]) ** 2 * np.exp(-log_vars)[None]  # (N, K, D)
    comp = -0.5 * (r2 + log_vars[None] + LOG_2PI).sum(-1)
    log_w = log_softmax(logits)
    terms = (r2 * (3.0 + np.abs(log_vars)[None]) + np.abs(log_vars)[None] + 2.0).sum(-1) + np.abs(log_w)[None]
    return logsumexp(comp + log_w[None], axis=1), terms.max(axis=1)


def _diag_mixture_grad_bound64(z: np.ndarray, logits: np.ndarray, locs: np.ndarray, log_vars: np.ndarray) -> float:
    """The largest |gradient| of Σ log p(z) with respect to ``z``, the means and the log-variances, in float64."""
    r = (z[:, None, :] - locs[None]) * np.exp(-0.5 * log_vars)[None]  # (N, K, D)
    comp = -0.5 * (r**2 + log_vars[None] + LOG_2PI).sum(-1) + log_softmax(logits)[None]
    resp = np.exp(comp - logsumexp(comp, axis=1, keepdims=True))[..., None]  # (N, K, 1)
    d_loc = resp * r * np.exp(-0.5 * log_vars)[None]
    d_log_var = resp * 0.5 * (r**2 - 1)
    return float(max(np.abs(d_loc.sum(1)).max(), np.abs(d_loc.sum(0)).max(), np.abs(d_log_var.sum(0)).max()))


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_gaussian_priors_property(dtype: torch.dtype, data: st.DataObject) -> None:
    n, d = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    learnable = data.draw(st.booleans())
    z = _leaf(data.draw(_array((n, d), -HALF_MAX, HALF_MAX)), dtype)
    if learnable:
        prior: nn.Module = LearnableGaussianPrior(d)
        with torch.no_grad():
            prior.loc.copy_(torch.from_numpy(data.draw(_array((d,), -1e6, 1e6))))
            prior.log_var.copy_(torch.from_numpy(data.draw(_array((d,), -300.0, 300.0))))
        loc64, log_var64 = _f64(prior.loc), _soft_clamp64(_f64(prior.log_var), *LOG_VAR_RANGE)
    else:
        prior = StandardNormalPrior(d)
        loc64, log_var64 = np.zeros(d), np.zeros(d)
    with _autocast(dtype):
        value = prior().log_prob(z)
    value.sum().backward()
    reference, scale = _diag_mixture64(_f64(z), np.zeros(1), loc64[None], log_var64[None])
    _assert_close(value, reference, scale, f"gaussian prior {dtype}")
    grads: dict[str, torch.Tensor | None] = {"z": z}
    if learnable:
        grads |= {"loc": prior.loc, "log_var": prior.log_var}
    _assert_grads_finite(grads, f"gaussian prior {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_mixture_of_gaussians_prior_property(dtype: torch.dtype, data: st.DataObject) -> None:
    n, d, k = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    spread = data.draw(st.sampled_from([3.0, 1e3, 1e6]))
    prior = MixtureOfGaussiansPrior(d, n_components=k)
    with torch.no_grad():
        prior.logits.copy_(torch.from_numpy(data.draw(_array((k,), -50.0, 50.0))))
        prior.locs.copy_(torch.from_numpy(data.draw(_array((k, d), -spread, spread))))
        prior.log_vars.copy_(torch.from_numpy(data.draw(_array((k, d), -300.0, 300.0))))
    z = _leaf(data.draw(_array((n, d), -min(spread, HALF_MAX), min(spread, HALF_MAX))), dtype)
    with _autocast(dtype):
        value = prior().log_prob(z)
    value.sum().backward()
    log_vars64 = _soft_clamp64(_f64(prior.log_vars), *LOG_VAR_RANGE)
    reference, scale = _diag_mixture64(_f64(z), _f64(prior.logits), _f64(prior.locs), log_vars64)
    _assert_close(value, reference, scale, f"mixture prior {dtype}")
    _assert_grads_finite(
        {"z": z, "logits": prior.logits, "locs": prior.locs, "log_vars": prior.log_vars}, f"mixture prior {dtype}"
    )


@pytest.mark.parametrize(
    ("log_var", "offset"), [(-50.0, 0.0), (-210.0, 0.0), (177.0, 0.0), (178.0, 1.0), (-30.0, 1e7), (0.0, 1e8)]
)
def test_mixture_prior_gradients_at_extreme_components(log_var: float, offset: float) -> None:
    """A component far away or at an extreme log-variance gives finite gradients and the exact value."""
    prior = MixtureOfGaussiansPrior(2, n_components=2)
    with torch.no_grad():
        prior.locs.copy_(torch.tensor([[0.0, 0.0], [offset, offset]]))
        prior.log_vars.copy_(torch.tensor([[0.0, 0.0], [log_var, log_var]]))
    z = torch.tensor([[0.3, -0.2], [1.0, 2.0]], requires_grad=True)
    value = prior().log_prob(z)
    value.sum().backward()
    log_vars64 = _soft_clamp64(_f64(prior.log_vars), *LOG_VAR_RANGE)
    reference, scale = _diag_mixture64(_f64(z), _f64(prior.logits), _f64(prior.locs), log_vars64)
    _assert_close(value, reference, scale, "mixture prior")
    _assert_grads_finite({"z": z, "logits": prior.logits, "locs": prior.locs, "log_vars": prior.log_vars}, "mixture")


def test_vamp_prior_gradient_reaches_the_encoder_from_a_far_sharp_pseudo_posterior() -> None:
    """A pseudo-posterior 1e7 away at the log-variance floor: zero responsibility, finite gradients."""
    encoder = _SplitEncoder(2)
    prior = VampPrior((4,), n_components=2)
    with torch.no_grad():
        prior.pseudo_inputs.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1e7, 1e7, -40.0, -40.0]]))
    z = torch.tensor([[0.5, -1.0], [2.0, 0.1]], requires_grad=True)
    value = prior(encoder).log_prob(z)
    value.sum().backward()
    loc, raw_log_var = encoder(prior.pseudo_inputs)
    log_vars64 = _soft_clamp64(_f64(raw_log_var), *LOG_VAR_RANGE)
    reference, scale = _diag_mixture64(_f64(z), np.zeros(2), _f64(loc), log_vars64)
    _assert_close(value, reference, scale, "vamp prior")
    _assert_grads_finite({"z": z, "pseudo_inputs": prior.pseudo_inputs}, "vamp prior")


class _SplitEncoder(nn.Module):
    """``u -> (u[:, :D], u[:, D:])`` through an identity linear layer, so autocast rounds its output."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * latent_dim, 2 * latent_dim, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(2 * latent_dim))
        self.latent_dim = latent_dim

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.linear(u)
        return out[:, : self.latent_dim], out[:, self.latent_dim :]


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_vamp_prior_property(dtype: torch.dtype, data: st.DataObject) -> None:
    n, d, k = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    spread = data.draw(st.sampled_from([3.0, 1e3, 1e7]))
    if dtype == torch.float16:
        spread = min(spread, HALF_MAX)
    encoder = _SplitEncoder(d)
    prior = VampPrior((2 * d,), n_components=k)
    with torch.no_grad():
        prior.pseudo_inputs[:, :d] = torch.from_numpy(data.draw(_array((k, d), -spread, spread)))
        prior.pseudo_inputs[:, d:] = torch.from_numpy(data.draw(_array((k, d), -300.0, 300.0)))
    z = _leaf(data.draw(_array((n, d), -spread, spread)), dtype)
    with _autocast(dtype):
        value = prior(encoder).log_prob(z)
        with torch.no_grad():
            loc, raw_log_var = encoder(prior.pseudo_inputs)
    value.sum().backward()
    log_vars64 = _soft_clamp64(_f64(raw_log_var), *LOG_VAR_RANGE)
    reference, scale = _diag_mixture64(_f64(z), np.zeros(k), _f64(loc), log_vars64)
    _assert_close(value, reference, scale, f"vamp prior {dtype}")
    # The pseudo-inputs' gradient is what reaches the encoder's log-variance output. Under float16 autocast
    # the encoder's backward runs in float16: it can only be finite where the float64 gradient at the
    # encoder's outputs fits in float16.
    grad_bound = _diag_mixture_grad_bound64(_f64(z), np.zeros(k), _f64(loc), log_vars64)
    if grad_bound < float(torch.finfo(dtype).max) / 4:
        _assert_grads_finite({"z": z, "pseudo_inputs": prior.pseudo_inputs}, f"vamp prior {dtype}")


#: What an encoder may return: the pair (as a tuple or a list), the package's posterior, or a torch Normal.
ENCODER_RETURNS = ["tuple", "list", "diagonal", "normal"]


class _ReturningEncoder(_SplitEncoder):
    """:class:`_SplitEncoder` returning ``(loc, log_var)`` as one of :data:`ENCODER_RETURNS`."""

    def __init__(self, latent_dim: int, returns: str) -> None:
        super().__init__(latent_dim)
        self.returns = returns

    def forward(self, u: torch.Tensor) -> Any:  # type: ignore[override]
        loc, log_var = super().forward(u)
        if self.returns == "tuple":
            return loc, log_var
        if self.returns == "list":
            return [loc, log_var]
        if self.returns == "diagonal":
            return DiagonalGaussian(loc, log_var)
        return Independent(Normal(loc, torch.exp(0.5 * log_var)), 1)


def _prior(name: str, d: int, k: int, data: st.DataObject, spread: float, log_var: tuple[float, float]) -> nn.Module:
    """A prior of each kind with its parameters (or pseudo-inputs) drawn over wide ranges."""
    if name == "standard_normal":
        return StandardNormalPrior(d)
    if name == "learnable":
        prior: nn.Module = LearnableGaussianPrior(d)
        with torch.no_grad():
            prior.loc.copy_(torch.from_numpy(data.draw(_array((d,), -spread, spread))))
            prior.log_var.copy_(torch.from_numpy(data.draw(_array((d,), -300.0, 300.0))))
        return prior
    if name == "mixture":
        prior = MixtureOfGaussiansPrior(d, n_components=k)
        with torch.no_grad():
            prior.logits.copy_(torch.from_numpy(data.draw(_array((k,), -50.0, 50.0))))
            prior.locs.copy_(torch.from_numpy(data.draw(_array((k, d), -spread, spread))))
            prior.log_vars.copy_(torch.from_numpy(data.draw(_array((k, d), -300.0, 300.0))))
        return prior
    prior = VampPrior((2 * d,), n_components=k)
    with torch.no_grad():
        prior.pseudo_inputs[:, :d] = torch.from_numpy(data.draw(_array((k, d), -spread, spread)))
        prior.pseudo_inputs[:, d:] = torch.from_numpy(data.draw(_array((k, d), *log_var)))
    return prior


@pytest.mark.parametrize("returns", ENCODER_RETURNS)
@pytest.mark.parametrize("prior_name", ["standard_normal", "learnable", "mixture", "vamp"])
@SETTINGS
@given(data=st.data())
def test_every_prior_gives_finite_gradients_whatever_the_encoder_returns(
    prior_name: str, returns: str, data: st.DataObject
) -> None:
    """The KL term of the objective (closed form or Monte Carlo, as the objective picks) and its gradients with
    respect to the encoder (its input and weights), the prior's parameters and VampPrior's pseudo-inputs.

    A ``Normal``'s scale is ``exp(log_var / 2)`` of the encoder's output, so its log-variances are drawn where
    that scale is a positive float32 (pseudo-inputs) and where torch's own ``Normal.log_prob`` has a finite
    gradient at the posterior's samples (the encoded batch); the package's clamped forms take any value.
    """
    n, d, k = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    spread = data.draw(st.sampled_from([3.0, 1e3, 1e7]))
    normal = returns == "normal"
    encoder = _ReturningEncoder(d, returns)
    prior = _prior(prior_name, d, k, data, spread, (-170.0, 80.0) if normal else (-300.0, 300.0))
    batch_log_var = (-40.0, 40.0) if normal else (-300.0, 300.0)
    u = _leaf(
        np.concatenate([data.draw(_array((n, d), -spread, spread)), data.draw(_array((n, d), *batch_log_var))], 1),
        torch.float32,
    )
    q = as_posterior(encoder(u))
    z = q.rsample((1,))
    kl, _ = kl_terms(q, prior(encoder), z)
    kl.sum().backward()
    what = f"{prior_name} prior, encoder returning {returns}"
    assert torch.isfinite(kl).all(), f"{what}: non-finite KL {kl}"
    grads: dict[str, torch.Tensor | None] = {"encoder input": u, "encoder weight": encoder.linear.weight}
    grads |= {name: param for name, param in prior.named_parameters()}
    _assert_grads_finite(grads, what)


def test_priors_build_and_evaluate_without_host_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``bool(tensor)`` (argument validation's host sync) while a prior is built and evaluated."""
    encoder = _SplitEncoder(3)
    priors = [MixtureOfGaussiansPrior(3, n_components=4), VampPrior((6,), n_components=4)]
    z = torch.randn(2, 5, 3)
    reads: list[str] = []
    original = torch.Tensor.__bool__

    def counting_bool(self: torch.Tensor) -> bool:
        reads.append("bool")
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counting_bool)
    for prior in priors:
        prior(encoder).log_prob(z).sum().backward()
    monkeypatch.undo()
    assert reads == []


# ------------------------------------------------------------------------------- posterior and KL
@SETTINGS
@given(
    loc=_array((3,), -1e6, 1e6),
    log_var=_array((3,), -60.0, 0.0),
)
def test_monte_carlo_kl_is_unbiased_down_to_the_variance_floor(loc: np.ndarray, log_var: np.ndarray) -> None:
    """log q(z|x) - log p(z) on samples averages to the closed-form KL, however small σ is next to |loc|.

    The prior is centred on the posterior mean (σ_p = 1), so only ``log q(z|x)`` can be off: recomputed
    from a float32 ``z`` that cannot resolve σ it would be too high by up to half a nat per dimension.
    """
    torch.manual_seed(0)
    q = DiagonalGaussian(torch.from_numpy(loc)[None], torch.from_numpy(log_var)[None])
    p = DiagonalGaussian(q.loc, torch.zeros_like(q.loc))
    z = q.rsample((4000,))
    estimate = float((q.log_prob(z) - p.log_prob(z)).mean())
    closed = float(gaussian_kl(q.loc, q.log_var, p.loc, p.log_var).sum())
    # Monte Carlo standard error sqrt(D/2 / 4000) < 0.02; allow 6 of them.
    assert abs(estimate - closed) < 0.12, f"Monte Carlo KL {estimate} vs closed form {closed}"


@SETTINGS
@given(loc=_array((4,), -10.0, 10.0), log_var=_array((4,), -8.0, 8.0))
def test_posterior_log_prob_of_other_values_matches_float64(loc: np.ndarray, log_var: np.ndarray) -> None:
    q = DiagonalGaussian(torch.from_numpy(loc)[None], torch.from_numpy(log_var)[None])
    z = q.rsample((3,))
    value = q.log_prob(z.clone())  # not the kept sample: recomputed from z
    lv = _f64(q.log_var)
    r2 = (_f64(z) - loc) ** 2 * np.exp(-lv)
    reference = -0.5 * (r2 + lv + LOG_2PI).sum(-1)
    _assert_close(value, reference, (r2 * (3 + np.abs(lv)) + np.abs(lv) + 2).sum(-1), "posterior")
    _assert_close(q.log_prob(z), reference, (r2 * (3 + np.abs(lv)) + np.abs(lv) + 2).sum(-1) + 10, "posterior")


@SETTINGS
@given(
    loc_q=_array((6,), -3e19, 3e19),
    loc_p=_array((6,), -1e3, 1e3),
    log_var_q=_array((6,), -30.0, 20.0),
    log_var_p=_array((6,), -30.0, 20.0),
)
def test_gaussian_kl_property(
    loc_q: np.ndarray, loc_p: np.ndarray, log_var_q: np.ndarray, log_var_p: np.ndarray
) -> None:
    """Non-negative, and exact to rounding wherever the float64 value fits in float32 (|Δloc| > 1.8e19 included)."""
    tensors = [torch.from_numpy(a).requires_grad_(True) for a in (loc_q, log_var_q, loc_p, log_var_p)]
    kl = gaussian_kl(*tensors)
    q64, lq, p64, lp = (a.astype(np.float64) for a in (loc_q, log_var_q, loc_p, log_var_p))
    reference = 0.5 * (np.expm1(lq - lp) - (lq - lp) + (q64 - p64) ** 2 * np.exp(-lp))
    fits = reference < float(np.finfo(np.float32).max)
    got = _f64(kl)
    assert (got >= 0).all()
    assert np.isinf(got[~fits]).all()
    scale = np.abs(reference) * 3 + np.abs(lq) + np.abs(lp) + 1
    _assert_close(kl[torch.from_numpy(fits)], reference[fits], scale[fits], "gaussian kl")
    kl[torch.from_numpy(fits)].sum().backward()
    # Gradients may only overflow together with the value's own order of magnitude: finite where the KL is
    # below 1e30.
    small = torch.from_numpy(reference < 1e30)
    for t in tensors:
        assert t.grad is not None and torch.isfinite(t.grad[small]).all()


def test_gaussian_kl_standard_normal_prior_is_exact_for_nearly_equal_variances() -> None:
    """``exp(lv) - 1 - lv`` loses everything below eps32 ~ 1e-7 nats; ``expm1(lv) - lv`` only the rounding of lv."""
    log_var = torch.tensor([1e-3, -1e-3, 1e-5, -3e-4, 0.0])
    kl = gaussian_kl(torch.zeros(5), log_var)
    lv = log_var.double().numpy()
    err = np.abs(_f64(kl) - 0.5 * (np.expm1(lv) - lv))
    assert (err <= 2 * EPS32 * np.abs(lv)).all(), err
