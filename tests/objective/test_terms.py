"""The parts of the objective (objective/terms.py): kl_terms against torch.distributions (closed form or Monte
Carlo by prior), free_bits_penalty's modes and gradients, the IWAE bound against NumPy and its properties, the
float32 region under autocast, and the named terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.modules import tiny_vae
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from lightning_vae.distributions import (
    DiagonalGaussian,
    FullCovarianceGaussian,
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    StandardNormal,
    StandardNormalPrior,
)
from lightning_vae.functional import gaussian_kl
from lightning_vae.objective import ELBOTerms, free_bits_penalty, iwae_bound, kl_terms
from lightning_vae.objective.terms import float32_region


def _free_bits_grads(free_bits: float, mode: str, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    # Dimensions with growing KL: loc grows along the latent axis.
    loc = (torch.randn(32, 6) * torch.linspace(0.05, 2.0, 6)).requires_grad_(True)
    log_var = torch.zeros(32, 6, requires_grad=True)
    q = DiagonalGaussian(loc, log_var)
    kl, elementwise = kl_terms(q, StandardNormal(6), q.rsample((1,)))
    penalty = free_bits_penalty(kl, elementwise, free_bits, mode, groups)  # type: ignore[arg-type]
    (g_fb,) = torch.autograd.grad(penalty, loc, retain_graph=True)
    (g_plain,) = torch.autograd.grad(kl.mean(), loc)
    return g_fb, g_plain, elementwise.detach().mean(0)


def test_free_bits_per_dimension_gradients() -> None:
    lam = 0.3
    g_fb, g_plain, per_dim = _free_bits_grads(lam, "dim")
    below = per_dim < lam
    assert below.any() and (~below).any()
    assert torch.all(g_fb[:, below] == 0)
    torch.testing.assert_close(g_fb[:, ~below], g_plain[:, ~below])


def test_free_bits_per_group_gradients() -> None:
    lam = 0.5
    g_fb, g_plain, per_dim = _free_bits_grads(lam, "group", groups=3)
    per_group = per_dim.view(3, 2).sum(-1)
    below = (per_group < lam).repeat_interleave(2)
    assert below.any() and (~below).any()
    assert torch.all(g_fb[:, below] == 0)
    torch.testing.assert_close(g_fb[:, ~below], g_plain[:, ~below])


def test_free_bits_on_total_kl() -> None:
    g_fb, _, per_dim = _free_bits_grads(per_dim_total := 1e3, "total")
    assert per_dim.sum() < per_dim_total and torch.all(g_fb == 0)
    g_fb, g_plain, _ = _free_bits_grads(1e-3, "total")
    torch.testing.assert_close(g_fb, g_plain)


def test_iwae_bound_is_above_the_elbo_and_grows_with_k() -> None:
    vae = tiny_vae()
    x = torch.rand(64, 1, 8, 8).round()
    with torch.no_grad():
        elbo_value = torch.stack([vae.compute_terms(x, n_samples=1)[0].elbo for _ in range(200)]).mean()
        bounds = {
            k: torch.stack([vae.compute_terms(x, n_samples=k)[0].iwae for _ in range(50)]).mean() for k in (2, 10, 50)
        }
    assert bounds[2] >= elbo_value
    assert bounds[2] <= bounds[10] <= bounds[50]


def test_objective_runs_in_float32_under_autocast() -> None:
    vae = tiny_vae()
    x = torch.rand(8, 1, 8, 8).round()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, out = vae.compute_terms(x)
    assert out.decoder_output.dtype == torch.bfloat16  # the decoder ran in bf16 ...
    assert terms.loss.dtype == torch.float32 and terms.kl.dtype == torch.float32  # ... the objective did not
    assert torch.isfinite(terms.loss)


def test_free_bits_penalty_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="divide the latent size 6"):
        free_bits_penalty(torch.ones(16), torch.ones(16, 6), 0.5, "group", groups=4)
    with pytest.raises(ValueError, match="free_bits_mode='total'"):
        free_bits_penalty(torch.ones(16), None, 0.5, "dim")
    with pytest.raises(ValueError, match=r"Expected `free_bits` to be >= 0 nats, got -0.1"):
        free_bits_penalty(torch.ones(16), None, -0.1, "total")
    with pytest.raises(ValueError, match=r"`free_bits_mode` to be one of \('dim', 'group', 'total', 'latent_group'\)"):
        free_bits_penalty(torch.ones(16), torch.ones(16, 6), 0.5, "each")  # type: ignore[arg-type]


# ---------------------------------------------------------------- kl_terms: closed form or Monte Carlo by prior
def _normal(loc: torch.Tensor, log_var: torch.Tensor) -> Normal:
    return Normal(loc, torch.exp(0.5 * log_var))


def test_kl_terms_closed_form_for_gaussian_priors() -> None:
    q = DiagonalGaussian(torch.randn(8, 5), torch.randn(8, 5))
    reference_q = Independent(_normal(q.loc, q.log_var), 1)
    for prior in (StandardNormalPrior(5), LearnableGaussianPrior(5)):
        if isinstance(prior, LearnableGaussianPrior):
            with torch.no_grad():
                prior.loc.normal_()
                prior.log_var.normal_()
        p = prior()
        kl, elementwise = kl_terms(q, p, q.rsample((1,)))
        reference = kl_divergence(reference_q, Independent(_normal(p.loc, p.log_var), 1))
        torch.testing.assert_close(kl, reference)
        assert elementwise is not None and elementwise.shape == (8, 5)


def test_kl_terms_monte_carlo_for_mixtures_is_unbiased() -> None:
    """A one-component mixture is a Gaussian: the Monte Carlo KL must average to the closed form."""
    prior = MixtureOfGaussiansPrior(3, n_components=1)
    q = DiagonalGaussian(torch.randn(4, 3), 0.5 * torch.randn(4, 3))
    z = q.sample((20000,))
    kl, elementwise = kl_terms(q, prior(), z)
    assert elementwise is None and kl.shape == (20000, 4)
    p = prior()
    closed = kl_divergence(
        Independent(_normal(q.loc, q.log_var), 1),
        Independent(Normal(p.component_distribution.base_dist.loc[0], p.component_distribution.base_dist.scale[0]), 1),
    )
    torch.testing.assert_close(kl.mean(0), closed, atol=0.05, rtol=0.02)


# ---------------------------------------------------------------- free_bits_penalty: each mode on a fixed batch
def _penalty_and_grad(loc: torch.Tensor, lam: float, mode: str, groups: int = 1) -> tuple[float, torch.Tensor]:
    """The free-bits KL term of q = N(loc, 1) against N(0, 1), and its gradient with respect to loc."""
    loc = loc.clone().requires_grad_(True)
    log_var = torch.zeros_like(loc)
    elementwise = gaussian_kl(loc, log_var)
    penalty = free_bits_penalty(elementwise.sum(-1), elementwise, lam, mode, groups)  # type: ignore[arg-type]
    penalty.backward()
    assert loc.grad is not None
    return penalty.item(), loc.grad


# Two examples, four latent dimensions. The KL of N(m, 1) from N(0, 1) is m^2 / 2, so with
#   dim 0: KL 0.08 and 0.32   -> batch mean 0.2
#   dim 1: KL 1.0 and 1.0     -> batch mean 1.0
#   dim 2: KL 0.02 and 1.28   -> batch mean 0.65 (one example under 0.5 nats, the mean above)
#   dim 3: KL 0.5 and 1.62    -> batch mean 1.06
LOC = torch.tensor([[0.4, 2.0**0.5, 0.2, 1.0], [0.8, -(2.0**0.5), 1.6, 1.8]], dtype=torch.float64)


MEAN_KL = torch.tensor([0.2, 1.0, 0.65, 1.06], dtype=torch.float64)


def test_reference_kl_of_the_fixture() -> None:
    reference = kl_divergence(Normal(LOC, 1.0), Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(reference, MEAN_KL)


def test_dim_mode_clamps_the_batch_averaged_kl_of_each_dimension() -> None:
    value, grad = _penalty_and_grad(LOC, 0.5, "dim")
    assert value == pytest.approx(0.5 + 1.0 + 0.65 + 1.06)  # sum_d max(0.5, mean KL_d)
    full = LOC / LOC.shape[0]  # d/d loc of mean_b loc^2 / 2
    torch.testing.assert_close(grad[:, 0], torch.zeros(2, dtype=torch.float64))  # under λ: no gradient
    torch.testing.assert_close(grad[:, 1:], full[:, 1:])
    # Dimension 2: example 0 alone is under λ, the batch mean is not, so example 0 still gets its gradient
    # (a per-example clamp would give it none).
    assert grad[0, 2] != 0


def test_group_mode_clamps_each_group_sum() -> None:
    # groups of dims (0, 1) and (2, 3): sums 1.2 and 1.71; λ = 1.5 holds the first group, not the second
    value, grad = _penalty_and_grad(LOC, 1.5, "group", groups=2)
    assert value == pytest.approx(1.5 + 0.65 + 1.06)
    torch.testing.assert_close(grad[:, :2], torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(grad[:, 2:], LOC[:, 2:] / 2)


@pytest.mark.parametrize(("lam", "held"), [(3.0, True), (2.5, False)])
def test_total_mode_clamps_the_total_kl(lam: float, held: bool) -> None:
    total = float(MEAN_KL.sum())  # 2.91
    value, grad = _penalty_and_grad(LOC, lam, "total")
    assert value == pytest.approx(max(lam, total))
    torch.testing.assert_close(grad, torch.zeros_like(LOC) if held else LOC / 2)


def test_latent_group_mode_clamps_the_batch_mean_kl_of_each_group() -> None:
    # two groups with per-example KLs (0.1, 0.3) and (1.0, 3.0): batch means 0.2 and 2.0; λ = 0.5 holds the first
    first = torch.tensor([0.1, 0.3], dtype=torch.float64, requires_grad=True)
    second = torch.tensor([1.0, 3.0], dtype=torch.float64, requires_grad=True)
    total = first + second
    penalty = free_bits_penalty(total, None, 0.5, "latent_group", group_kls=[first, second])
    assert penalty.item() == pytest.approx(0.5 + 2.0)
    penalty.backward()
    torch.testing.assert_close(first.grad, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(second.grad, torch.full((2,), 0.5, dtype=torch.float64))
    # without the groups' KLs (one group) it is the total mode
    assert free_bits_penalty(total.detach(), None, 3.0, "latent_group").item() == pytest.approx(3.0)


def test_zero_free_bits_is_the_mean_kl_in_every_mode() -> None:
    kl, elementwise = torch.tensor([1.0, 2.0, 4.5]), torch.rand(3, 4)
    for mode in ("dim", "group", "total", "latent_group"):
        assert free_bits_penalty(kl, elementwise, 0.0, mode).item() == pytest.approx(2.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the IWAE bound, the float32 region, the terms
def test_iwae_bound_matches_a_numpy_log_mean_exp() -> None:
    g = torch.Generator().manual_seed(0)
    log_weights = 30 * torch.randn(7, 5, generator=g) - 200  # far from 0: a naive exp would underflow
    w = log_weights.double().numpy()
    top = w.max(0)
    reference = (top + np.log(np.exp(w - top).mean(0))).mean()
    assert iwae_bound(log_weights).item() == pytest.approx(reference, rel=1e-6)
    # one sample: the bound is the mean log-weight, the ELBO
    assert iwae_bound(log_weights[:1]).item() == pytest.approx(w[0].mean(), rel=1e-6)
    # equal weights: log mean exp of k copies is the value itself
    assert iwae_bound(torch.full((9, 3), -4.0)).item() == pytest.approx(-4.0, abs=1e-6)


def test_the_float32_region_turns_autocast_off_and_is_a_no_op_without_it() -> None:
    cpu = torch.device("cpu")
    with float32_region(cpu):
        assert not torch.is_autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = torch.randn(4, 4)
        assert (a @ a).dtype == torch.bfloat16
        with float32_region(cpu):
            assert not torch.is_autocast_enabled("cpu") and (a @ a).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")  # restored on leaving


def test_kl_terms_of_a_full_covariance_posterior_match_torch() -> None:
    torch.manual_seed(0)
    q = FullCovarianceGaussian(torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3))
    reference_q = MultivariateNormal(q.loc, scale_tril=q.scale_tril)
    kl, elementwise = kl_terms(q, StandardNormal(3), q.rsample((1,)))
    assert elementwise is None  # a full covariance does not factorise over dimensions
    standard = MultivariateNormal(torch.zeros(3), torch.eye(3))
    torch.testing.assert_close(kl, kl_divergence(reference_q, standard), rtol=1e-5, atol=1e-5)
    p = LearnableGaussianPrior(3)
    with torch.no_grad():
        p.loc.normal_()
        p.log_var.normal_()
    prior = p()
    kl, _ = kl_terms(q, prior, q.rsample((1,)))
    diagonal = MultivariateNormal(p.loc.detach(), torch.diag(p.log_var.detach().exp()))
    torch.testing.assert_close(kl.detach(), kl_divergence(reference_q, diagonal), rtol=1e-4, atol=1e-4)


def test_elbo_terms_are_named_with_optional_reports() -> None:
    t = torch.tensor
    terms = ELBOTerms(t(1.0), t(-1.0), t(0.7), t(0.3), None, t(0.3), None, None)
    assert terms.loss.item() == 1.0 and terms.recon.item() == pytest.approx(0.7)
    assert terms.kl_groups is None and terms.kl_per_dim_groups is None and terms.extra is None
    assert terms._replace(extra={"tc": t(0.1)}).extra["tc"].item() == pytest.approx(0.1)
    assert ELBOTerms._fields[:4] == ("loss", "elbo", "recon", "kl")
