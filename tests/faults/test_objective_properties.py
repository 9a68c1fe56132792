"""Property tests of :func:`lightning_vae.objective.elbo` over generated shapes and values.

* every term and every gradient of the loss is finite for finite inputs;
* the IWAE bound is at least the ELBO on the same samples (log-mean-exp >= mean), and equals the
  float64 log-mean-exp of the log-weights;
* the closed-form KL is non-negative, in total and per dimension;
* free bits: dimensions (groups, or the total) whose batch-mean KL is under λ receive exactly zero
  gradient from the KL term, the others exactly the gradient of the plain KL.

Examples are derandomised (the same on every run) and bounded, so the file runs in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp
from torch.distributions import Distribution

from lightning_vae.distributions import (
    BernoulliLikelihood,
    DiagonalGaussian,
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
)
from lightning_vae.objective import elbo

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EPS32 = float(np.finfo(np.float32).eps)


def _array(shape: tuple[int, ...], low: float, high: float) -> st.SearchStrategy[np.ndarray]:
    low32, high32 = float(np.float32(low)), float(np.float32(high))
    return arrays(np.float32, shape, elements=st.floats(low32, high32, width=32))


@dataclass
class Problem:
    """One batch: data, the posterior's leaf parameters, decoder logits and a prior module."""

    x: torch.Tensor
    loc: torch.Tensor
    log_var: torch.Tensor
    logits: torch.Tensor
    weight: torch.Tensor
    prior: torch.nn.Module
    k: int

    def run(self, **kwargs: object):  # noqa: ANN201 - ELBOTerms, plus the inputs the test differentiates
        q = DiagonalGaussian(self.loc, self.log_var)
        z = q.rsample((self.k,))
        # The decoder output depends on z, so the reconstruction term has a gradient through the samples.
        decoder_output = self.logits + z @ self.weight
        prior: Distribution = self.prior()
        return elbo(self.x, q, z, decoder_output, BernoulliLikelihood(), prior, **kwargs)  # type: ignore[arg-type]

    def leaves(self) -> dict[str, torch.Tensor]:
        out = {"loc": self.loc, "log_var": self.log_var, "logits": self.logits, "weight": self.weight}
        out |= {name: p for name, p in self.prior.named_parameters()}
        return out


@st.composite
def problems(draw: st.DrawFn, k: int | None = None, priors: tuple[str, ...] = ("standard", "learnable", "mixture")):
    b, d, dx = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    k = draw(st.integers(1, 5)) if k is None else k
    spread = draw(st.sampled_from([1.0, 30.0, 1e3]))
    loc = torch.from_numpy(draw(_array((b, d), -spread, spread))).requires_grad_(True)
    log_var = torch.from_numpy(draw(_array((b, d), -100.0, 100.0))).requires_grad_(True)
    logits = torch.from_numpy(draw(_array((b, dx), -spread, spread))).requires_grad_(True)
    weight = torch.from_numpy(draw(_array((d, dx), -1.0, 1.0))).requires_grad_(True)
    x = torch.from_numpy(draw(arrays(np.float32, (b, dx), elements=st.sampled_from([0.0, 1.0]))))
    kind = draw(st.sampled_from(priors))
    prior: torch.nn.Module
    if kind == "standard":
        prior = StandardNormalPrior(d)
    elif kind == "learnable":
        prior = LearnableGaussianPrior(d)
        with torch.no_grad():
            prior.loc.copy_(torch.from_numpy(draw(_array((d,), -spread, spread))))
            prior.log_var.copy_(torch.from_numpy(draw(_array((d,), -100.0, 100.0))))
    else:
        n = draw(st.integers(1, 4))
        prior = MixtureOfGaussiansPrior(d, n_components=n)
        with torch.no_grad():
            prior.logits.copy_(torch.from_numpy(draw(_array((n,), -30.0, 30.0))))
            prior.locs.copy_(torch.from_numpy(draw(_array((n, d), -spread, spread))))
            prior.log_vars.copy_(torch.from_numpy(draw(_array((n, d), -100.0, 100.0))))
    return Problem(x, loc, log_var, logits, weight, prior, k)


@SETTINGS
@given(problem=problems(), beta=st.sampled_from([0.0, 0.5, 1.0, 4.0]))
def test_terms_and_gradients_are_finite(problem: Problem, beta: float) -> None:
    torch.manual_seed(0)
    terms = problem.run(beta=beta)
    for name in ("loss", "elbo", "recon", "kl", "kl_penalty", "log_weights"):
        assert torch.isfinite(getattr(terms, name)).all(), f"{name} is not finite: {getattr(terms, name)}"
    if problem.k > 1:
        assert terms.iwae is not None and torch.isfinite(terms.iwae)
    leaves = problem.leaves()
    grads = torch.autograd.grad(terms.loss, list(leaves.values()), allow_unused=True)
    for (name, _), grad in zip(leaves.items(), grads):
        assert grad is None or torch.isfinite(grad).all(), f"non-finite gradient of {name}: {grad}"


@SETTINGS
@given(problem=problems(k=None), k=st.integers(2, 6))
def test_iwae_is_at_least_the_elbo_on_the_same_samples(problem: Problem, k: int) -> None:
    torch.manual_seed(0)
    problem.k = k
    terms = problem.run()
    log_weights = terms.log_weights.double().numpy()  # (k, B): the samples both bounds are computed from
    assert log_weights.shape[0] == k and terms.iwae is not None
    rounding = 8 * EPS32 * (np.abs(log_weights).max() + 1.0)
    assert float(terms.elbo) <= float(terms.iwae) + rounding
    # Per example too, and against a float64 log-mean-exp of the same weights.
    lme = logsumexp(log_weights, axis=0) - np.log(k)
    assert (lme >= log_weights.mean(0) - rounding).all()
    assert abs(float(terms.iwae) - lme.mean()) <= rounding
    assert abs(float(terms.elbo) - log_weights.mean()) <= rounding


@SETTINGS
@given(problem=problems(k=1, priors=("standard", "learnable")))
def test_closed_form_kl_is_non_negative(problem: Problem) -> None:
    torch.manual_seed(0)
    terms = problem.run()
    assert terms.kl_per_dim is not None
    assert float(terms.kl.detach()) >= 0.0
    assert (terms.kl_per_dim >= 0).all(), terms.kl_per_dim


@SETTINGS
@given(
    problem=problems(k=1, priors=("standard", "learnable")),
    free_bits=st.floats(0.01, 50.0),
    mode=st.sampled_from(["dim", "group", "total"]),
    data=st.data(),
)
def test_free_bits_gradient_is_zero_under_lambda(
    problem: Problem, free_bits: float, mode: str, data: st.DataObject
) -> None:
    torch.manual_seed(0)
    d = problem.loc.shape[1]
    groups = data.draw(st.sampled_from([g for g in range(1, d + 1) if d % g == 0])) if mode == "group" else 1
    terms = problem.run(free_bits=free_bits, free_bits_mode=mode, free_bits_groups=groups)
    torch.manual_seed(0)
    plain = problem.run()  # the same sample (same seed): the plain KL's gradient
    assert terms.kl_per_dim is not None
    per_dim = terms.kl_per_dim.double()
    if mode == "dim":
        unit_kl = per_dim
        unit_of_dim = torch.arange(d)
    elif mode == "group":
        unit_kl = per_dim.view(groups, -1).sum(-1)
        unit_of_dim = torch.arange(d) // (d // groups)
    else:
        unit_kl = terms.kl.double().view(1)
        unit_of_dim = torch.zeros(d, dtype=torch.long)
    params = [problem.loc, problem.log_var]
    fb_grads = torch.autograd.grad(terms.kl_penalty, params)
    plain_grads = torch.autograd.grad(plain.kl_penalty, params)
    under = (unit_kl < free_bits)[unit_of_dim]  # (D,): the dimension's unit is under λ
    over = (unit_kl > free_bits)[unit_of_dim]
    for fb, pl in zip(fb_grads, plain_grads):
        assert torch.all(fb[:, under] == 0), f"gradient under λ={free_bits}: {fb[:, under]}"
        # Over λ the KL enters as the plain mean KL: the same gradient (up to the order of summation).
        torch.testing.assert_close(fb[:, over], pl[:, over], rtol=1e-5, atol=1e-6)
