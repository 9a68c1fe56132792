"""The objective: terms against torch.distributions, free-bits gradients, IWAE properties, numerics."""

from __future__ import annotations

import math

import pytest
import torch
from support.modules import tiny_vae
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from lightning_vae.distributions import (
    BernoulliLikelihood,
    DiagonalGaussian,
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    StandardNormal,
    StandardNormalPrior,
)
from lightning_vae.functional import gaussian_kl
from lightning_vae.objective import elbo, free_bits_penalty, kl_terms


def _batch(b: int = 16, d: int = 6, dx: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randint(0, 2, (b, dx)).float(), torch.randn(b, d), torch.randn(b, d)


def test_elbo_terms_match_torch_distributions() -> None:
    x, loc, log_var = _batch()
    q = DiagonalGaussian(loc, log_var)
    z = q.rsample((1,))
    logits = torch.randn(1, 16, 10)
    terms = elbo(x, q, z, logits, BernoulliLikelihood(), StandardNormal(6), beta=2.5)
    recon = -Bernoulli(logits=logits[0]).log_prob(x).sum(-1).mean()
    kl = kl_divergence(
        Independent(Normal(loc, torch.exp(0.5 * log_var)), 1), Independent(Normal(0.0, torch.ones(6)), 1)
    )
    torch.testing.assert_close(terms.recon, recon)
    torch.testing.assert_close(terms.kl, kl.mean())
    torch.testing.assert_close(terms.elbo, -(recon + kl.mean()))
    torch.testing.assert_close(terms.loss, recon + 2.5 * kl.mean())
    torch.testing.assert_close(terms.kl_per_dim.sum(), kl.mean())
    assert terms.iwae is None and terms.log_weights.shape == (1, 16)


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


def test_free_bits_keeps_the_raw_kl_reported() -> None:
    x, loc, log_var = _batch()
    q = DiagonalGaussian(0.01 * loc, log_var.clamp(-0.01, 0.01))
    lik, p = BernoulliLikelihood(), StandardNormal(6)
    z = q.rsample((1,))
    plain = elbo(x, q, z, torch.zeros(1, 16, 10), lik, p)
    fb = elbo(x, q, z, torch.zeros(1, 16, 10), lik, p, free_bits=0.5)
    torch.testing.assert_close(fb.kl, plain.kl)  # raw KL unchanged
    torch.testing.assert_close(fb.kl_penalty, torch.tensor(6 * 0.5))  # every dimension under λ
    torch.testing.assert_close(fb.elbo, plain.elbo)


def test_capacity_form() -> None:
    x, loc, log_var = _batch()
    q = DiagonalGaussian(loc, log_var)
    terms = elbo(
        x,
        q,
        q.rsample((1,)),
        torch.zeros(1, 16, 10),
        BernoulliLikelihood(),
        StandardNormal(6),
        capacity=2.0,
        capacity_gamma=10.0,
    )
    torch.testing.assert_close(terms.loss, terms.recon + 10.0 * (terms.kl - 2.0).abs())


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


def test_iwae_loss_is_the_negative_bound_at_beta_one() -> None:
    vae = tiny_vae(n_samples=5)
    terms, _ = vae.compute_terms(torch.rand(8, 1, 8, 8).round())
    torch.testing.assert_close(terms.loss, -terms.iwae)
    manual = torch.logsumexp(terms.log_weights, 0) - math.log(5)
    torch.testing.assert_close(terms.iwae, manual.mean())


def test_objective_runs_in_float32_under_autocast() -> None:
    vae = tiny_vae()
    x = torch.rand(8, 1, 8, 8).round()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, out = vae.compute_terms(x)
    assert out.decoder_output.dtype == torch.bfloat16  # the decoder ran in bf16 ...
    assert terms.loss.dtype == torch.float32 and terms.kl.dtype == torch.float32  # ... the objective did not
    assert torch.isfinite(terms.loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_encoder_outputs_give_finite_loss_and_gradients(dtype: torch.dtype) -> None:
    x = torch.randint(0, 2, (4, 10)).float()
    loc = torch.tensor([[0.0, 5.0, -5.0]] * 4, dtype=dtype, requires_grad=True)
    log_var = torch.tensor([[1e4, -1e4, 0.0]] * 4, dtype=dtype, requires_grad=True)
    logits = (torch.randn(1, 4, 10) * 1e4).to(dtype).requires_grad_(True)
    q = DiagonalGaussian(loc, log_var)
    terms = elbo(x, q, q.rsample((1,)), logits, BernoulliLikelihood(), StandardNormal(3), free_bits=0.1)
    terms.loss.backward()
    assert torch.isfinite(terms.loss)
    for t in (loc, log_var, logits):
        assert torch.isfinite(t.grad).all()


def test_objective_validates_its_arguments() -> None:
    x, loc, log_var = _batch()
    q = DiagonalGaussian(loc, log_var)
    args = (x, q, q.rsample((3,)), torch.zeros(3, 16, 10), BernoulliLikelihood(), StandardNormal(6))
    with pytest.raises(ValueError, match="single-sample ELBO.*got 3"):
        elbo(*args, free_bits=0.5)
    with pytest.raises(ValueError, match="`beta` to be a finite float >= 0"):
        elbo(*args, beta=-1.0)
    with pytest.raises(ValueError, match=r"shape \(k, B, D\)"):
        elbo(x, q, q.rsample(), torch.zeros(16, 10), BernoulliLikelihood(), StandardNormal(6))
    with pytest.raises(ValueError, match="divide the latent size 6"):
        free_bits_penalty(torch.ones(16), torch.ones(16, 6), 0.5, "group", groups=4)
    with pytest.raises(ValueError, match="free_bits_mode='total'"):
        free_bits_penalty(torch.ones(16), None, 0.5, "dim")


@pytest.mark.parametrize("settings", [{}, {"beta": 0.3}, {"free_bits": 0.2}, {"capacity": 1.0}, {"n": 4}])
def test_unreported_steps_give_the_same_loss_and_gradients(settings: dict) -> None:
    """``report=False`` (training steps that log nothing) changes no loss and no gradient: bit for bit."""
    from lightning_vae.distributions import BernoulliLikelihood, DiagonalGaussian, StandardNormal
    from lightning_vae.objective import elbo_groups

    n = settings.pop("n", 1)
    results = []
    for report in (True, False):
        torch.manual_seed(0)
        loc = torch.randn(6, 3, requires_grad=True)
        log_var = torch.randn(6, 3, requires_grad=True)
        q = DiagonalGaussian(loc, log_var)
        z = q.rsample((n,))
        logits = z @ torch.ones(3, 5)
        x = torch.rand(6, 5).round()
        terms = elbo_groups(x, {"z": q}, {"z": z}, logits, BernoulliLikelihood(), {"z": StandardNormal(3)},
                            report=report, **settings)  # fmt: skip
        terms.loss.backward()
        results.append((terms, loc.grad, log_var.grad))
    (full, *grads_full), (lean, *grads_lean) = results
    torch.testing.assert_close(lean.loss, full.loss, rtol=0, atol=0)
    for a, b in zip(grads_full, grads_lean):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert full.elbo is not None and full.kl_per_dim is not None
    assert lean.elbo is None and lean.kl_per_dim is None and lean.kl_elementwise is not None


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
