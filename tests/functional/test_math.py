"""``functional.math.soft_clamp`` against its float64 formula, at the edges and through autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_vae.distributions.posteriors import LOG_VAR_RANGE
from lightning_vae.functional.math import soft_clamp

LOW, HIGH = LOG_VAR_RANGE


def _reference(x: np.ndarray) -> np.ndarray:
    """``high - softplus(high - low - softplus(x - low))`` in float64 (NumPy's logaddexp as softplus)."""
    return HIGH - np.logaddexp(0.0, (HIGH - LOW) - np.logaddexp(0.0, x - LOW))


def _reference_grad(x: np.ndarray) -> np.ndarray:
    """d/dx of the formula: sigmoid(x - low) * sigmoid(high - low - softplus(x - low))."""
    sigmoid = lambda t: 0.5 * (1.0 + np.tanh(0.5 * t))  # noqa: E731
    return sigmoid(x - LOW) * sigmoid((HIGH - LOW) - np.logaddexp(0.0, x - LOW))


def test_matches_the_formula_and_its_derivative() -> None:
    x64 = np.concatenate([np.linspace(LOW - 40, HIGH + 40, 4001), [-1e30, -1e4, 1e4, 1e30, 0.0, 1e-20, -3.5]])
    x = torch.tensor(x64, dtype=torch.float32, requires_grad=True)
    y = soft_clamp(x, LOW, HIGH)
    y.sum().backward()
    x32 = x.detach().double().numpy()  # the float32 inputs, exactly
    error = np.abs(y.detach().double().numpy() - _reference(x32))
    # float32 rounding of a result of magnitude <= max(|low|, |high|) = 30
    assert error.max() <= 4 * np.finfo(np.float32).eps * 30, error.max()
    np.testing.assert_allclose(x.grad.double().numpy(), _reference_grad(x32), rtol=1e-5, atol=1e-7)


def test_saturates_with_finite_values_and_gradients_at_infinities() -> None:
    x = torch.tensor([-float("inf"), float("inf")], requires_grad=True)
    y = soft_clamp(x, LOW, HIGH)
    y.sum().backward()
    assert y.tolist() == [LOW, HIGH]
    assert x.grad.tolist() == [0.0, 0.0]


def test_is_the_identity_inside_the_interval_up_to_exp_of_minus_the_distance() -> None:
    x = torch.linspace(LOW + 1, HIGH - 1, 5001)
    distance = torch.minimum(x - LOW, HIGH - x)
    # plus the float32 rounding of the shifted values x - low and high - low - softplus(x - low) (magnitude <= 50)
    bound = torch.exp(-distance) + 2 * torch.finfo(torch.float32).eps * (HIGH - LOW)
    assert ((soft_clamp(x, LOW, HIGH) - x).abs() <= bound).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_keeps_the_input_dtype(dtype: torch.dtype) -> None:
    x = torch.tensor([-100.0, 0.5, 100.0], dtype=dtype)
    y = soft_clamp(x, LOW, HIGH)
    assert y.dtype == dtype
    assert y.float().tolist() == pytest.approx([LOW, 0.5, HIGH], abs=0.2)


def test_rejects_an_empty_interval() -> None:
    with pytest.raises(ValueError, match="`low` to be < `high`"):
        soft_clamp(torch.zeros(2), 1.0, 1.0)


# ---------------------------------------------------------------- clamp_log_var (the training step's clamp)
def test_clamp_log_var_skips_only_where_the_clamp_is_the_identity() -> None:
    from lightning_vae.distributions.posteriors import IDENTITY_RANGE, clamp_log_var

    lo, hi = IDENTITY_RANGE
    x64 = np.linspace(lo, hi, 200001)
    x = torch.tensor(x64, dtype=torch.float32, requires_grad=True)
    y = clamp_log_var(x)
    assert y is x  # skipped: nothing computed, the derivative is exactly 1
    # Returning x is nearer the exact (float64) clamp than float32's own evaluation of it; the derivative is 1 to 3e-7.
    exact = _reference(x.detach().double().numpy())
    own = soft_clamp(x.detach(), LOW, HIGH).double().numpy()
    skipped_error = np.max(np.abs(x.detach().double().numpy() - exact))
    assert skipped_error <= math.exp(-15.0) * 1.001 < np.max(np.abs(own - exact))
    assert np.max(np.abs(_reference_grad(x.detach().double().numpy()) - 1.0)) <= math.exp(-15.0) * 1.001
    # Any value outside the range, or a NaN, and the whole batch is clamped.
    for outside in (lo - 0.01, hi + 0.01, -1e4, 1e4, float("nan")):
        batch = torch.tensor([0.0, outside, -3.0])
        out = clamp_log_var(batch)
        assert out is not batch
        torch.testing.assert_close(out, soft_clamp(batch, LOW, HIGH), equal_nan=True)
    assert clamp_log_var(torch.empty(0, 3)).shape == (0, 3)


def test_clamp_log_var_reads_nothing_off_the_cpu() -> None:
    """On another device the clamp is applied without a host read (``meta`` tensors have no values to read)."""
    from lightning_vae.distributions.posteriors import clamp_log_var

    out = clamp_log_var(torch.zeros(4, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, 3)
