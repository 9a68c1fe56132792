"""Priors (distributions/priors.py) against torch.distributions and hand sums: mixture and VampPrior densities,
sampling, clamping, argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from lightning_vae.distributions import (
    DiagonalGaussian,
    DiagonalGaussianMixture,
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
)
from lightning_vae.nets import MLPEncoder


def _normal(loc: torch.Tensor, log_var: torch.Tensor) -> Normal:
    return Normal(loc, torch.exp(0.5 * log_var))


def test_mixture_prior_log_prob_matches_hand_sum() -> None:
    prior = MixtureOfGaussiansPrior(2, n_components=3)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.1, -0.3, 0.7]))
    z = torch.randn(10, 2)
    w = torch.softmax(prior.logits.detach(), 0)
    comps = [
        Normal(prior.locs[k].detach(), torch.exp(0.5 * prior.log_vars[k].detach())).log_prob(z).sum(-1)
        for k in range(3)
    ]
    expected = torch.logsumexp(torch.stack([c + torch.log(w[k]) for k, c in enumerate(comps)]), 0)
    torch.testing.assert_close(prior().log_prob(z), expected)


def test_vamp_prior_is_the_mean_of_pseudo_posteriors() -> None:
    enc = MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(8,))
    prior = VampPrior((1, 4, 4), n_components=6)
    z = torch.randn(7, 3)
    loc, log_var = enc(prior.pseudo_inputs)
    per_component = torch.stack([_normal(loc[k], log_var[k]).log_prob(z).sum(-1) for k in range(6)])
    expected = torch.logsumexp(per_component, 0) - math.log(6)
    torch.testing.assert_close(prior(enc).log_prob(z), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs the encoder"):
        prior()


class _NormalEncoder(torch.nn.Module):
    """An encoder returning ``Independent(Normal(loc, exp(log_var / 2)), 1)``: a diagonal Gaussian by another type."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Independent:
        loc, log_var = self.inner(x)
        return Independent(_normal(loc, log_var), 1)


def test_vamp_prior_of_a_normal_encoder_is_the_scale_safe_mixture_of_its_pseudo_posteriors() -> None:
    enc = MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(8,))
    prior = VampPrior((1, 4, 4), n_components=6)
    z = torch.randn(7, 3)
    p = prior(_NormalEncoder(enc))
    assert isinstance(p, DiagonalGaussianMixture)
    loc, log_var = enc(prior.pseudo_inputs)
    per_component = torch.stack([_normal(loc[k], log_var[k]).log_prob(z).sum(-1) for k in range(6)])
    expected = torch.logsumexp(per_component, 0) - math.log(6)
    torch.testing.assert_close(p.log_prob(z), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p.log_prob(z), prior(enc).log_prob(z), atol=1e-5, rtol=1e-5)


def test_vamp_prior_of_a_normal_encoder_has_finite_gradients_at_a_sharp_pseudo_posterior() -> None:
    """Pseudo-posteriors at log-variance -60 (scale 9e-14): ``MixtureSameFamily`` of ``Normal`` gave NaN there."""
    linear = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(4))

    def encoder(u: torch.Tensor) -> Independent:
        out = linear(u)
        return Independent(Normal(out[:, :2], torch.exp(0.5 * out[:, 2:])), 1)

    prior = VampPrior((4,), n_components=2)
    with torch.no_grad():
        prior.pseudo_inputs.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, -2.0, -60.0, -60.0]]))
    z = torch.tensor([[0.5, -1.0], [2.0, 0.1]], requires_grad=True)
    value = prior(encoder).log_prob(z)
    value.sum().backward()
    assert torch.isfinite(value).all()
    for t in (z, prior.pseudo_inputs, linear.weight):
        assert torch.isfinite(t.grad).all(), t.grad


def test_mixture_residual_beyond_the_float32_range_gives_finite_gradients() -> None:
    """A component 1e33 away at the log-variance floor: ``(z - loc)·exp(-log_var/2)`` overflows float32 (the
    documented limit is 1e32); its responsibility is 0, so every gradient is that of the near component alone."""
    prior = MixtureOfGaussiansPrior(2, n_components=2)
    with torch.no_grad():
        prior.locs.copy_(torch.tensor([[0.0, 0.0], [1e33, -1e33]]))
        prior.log_vars.copy_(torch.tensor([[0.0, 0.0], [-300.0, -300.0]]))
        prior.logits.copy_(torch.tensor([0.3, -0.2]))
    z = torch.tensor([[0.3, -0.2], [1.0, 2.0]], requires_grad=True)
    value = prior().log_prob(z)
    value.sum().backward()
    # The far component contributes nothing: log p(z) = log w_0 + log N(z; 0, I), in float64 by torch.distributions.
    log_w0 = torch.log_softmax(torch.tensor([0.3, -0.2], dtype=torch.float64), 0)[0]
    expected = log_w0 + Normal(torch.zeros(2, dtype=torch.float64), 1.0).log_prob(z.detach().double()).sum(-1)
    torch.testing.assert_close(value.double(), expected, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(z.grad.double(), -z.detach().double())
    for t in (prior.locs, prior.log_vars, prior.logits):
        assert torch.isfinite(t.grad).all(), t.grad
    assert torch.all(prior.locs.grad[1] == 0) and torch.all(prior.log_vars.grad[1] == 0)


def _paper_vamp_log_p_z(enc: MLPEncoder, pseudo: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``VAE.log_p_z`` of jmtomczak/vae_vampprior in float64: ``hardtanh(0, 1)`` on the pseudo-inputs, the encoder's
    Gaussians at them, ``log_Normal_diag`` summed over z, log-sum-exp minus ``log C``."""
    enc64 = enc.double()
    loc, log_var = enc64(torch.nn.functional.hardtanh(pseudo.double(), 0.0, 1.0))
    z = z.double().unsqueeze(1)
    log_normal = -0.5 * (log_var + (z - loc) ** 2 / log_var.exp() + math.log(2 * math.pi))
    return torch.logsumexp(log_normal.sum(-1), 1) - math.log(pseudo.shape[0])


def test_vamp_prior_with_hardtanh_is_the_papers_prior() -> None:
    # Pseudo-inputs on both sides of [0, 1], so the clipping decides the density.
    enc = MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(8,))
    prior = VampPrior((1, 4, 4), n_components=6, pseudo_input_activation="hardtanh", init_mean=0.5, init_std=0.8)
    assert bool((prior.pseudo_inputs < 0).any()) and bool((prior.pseudo_inputs > 1).any())
    z = torch.randn(7, 3)
    got = prior(enc).log_prob(z)
    expected = _paper_vamp_log_p_z(enc, prior.pseudo_inputs.detach(), z)
    enc.float()
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-5)
    # Without the option the encoder sees the unclipped pseudo-inputs: another density.
    free = VampPrior((1, 4, 4), n_components=6, init_mean=0.5, init_std=0.8)
    assert not torch.allclose(free(enc).log_prob(z), got, atol=1e-3)


def test_vamp_prior_hardtanh_passes_no_gradient_outside_the_unit_interval() -> None:
    enc = MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(8,))
    prior = VampPrior((1, 4, 4), n_components=5, pseudo_input_activation="hardtanh", init_mean=0.5, init_std=0.8)
    prior(enc).log_prob(torch.randn(9, 3)).sum().backward()
    u, grad = prior.pseudo_inputs.detach(), prior.pseudo_inputs.grad
    assert grad is not None
    outside = (u < 0) | (u > 1)
    assert bool(outside.any()) and bool((grad[outside] == 0).all())
    assert bool((grad[~outside] != 0).any())


def test_vamp_prior_initialisation_follows_its_arguments() -> None:
    # The paper's code (load_data.py for MNIST): N(0.05, 0.01); 500 x 784 draws pin mean and spread down.
    u = VampPrior((1, 28, 28), n_components=500, init_mean=0.05, init_std=0.01).pseudo_inputs.detach().double()
    assert abs(float(u.mean()) - 0.05) < 1e-4 and abs(float(u.std()) - 0.01) < 1e-4
    default = VampPrior((1, 28, 28), n_components=500).pseudo_inputs.detach().double()
    assert abs(float(default.mean()) - 0.5) < 1e-3 and abs(float(default.std()) - 0.05) < 1e-3


def test_standard_normal_prior_needs_its_size_before_sampling() -> None:
    with pytest.raises(ValueError, match="latent size"):
        StandardNormalPrior()()


def test_diagonal_gaussian_mixture_samples_and_validates_shapes() -> None:
    p = DiagonalGaussianMixture(torch.tensor([0.0, 1.0]), torch.tensor([[-5.0, 0.0], [5.0, 0.0]]), torch.zeros(2, 2))
    s = p.sample((1000,))
    assert s.shape == (1000, 2) and p.event_shape == (2,) and p.batch_shape == ()
    share_right = float((s[:, 0] > 0).float().mean())
    assert abs(share_right - float(torch.sigmoid(torch.tensor(1.0)))) < 0.05
    with pytest.raises(ValueError, match=r"\(K,\).*\(K, D\)"):
        DiagonalGaussianMixture(torch.zeros(3), torch.zeros(2, 2), torch.zeros(2, 2))


def test_mixture_prior_clamps_component_log_variances_like_the_posterior() -> None:
    prior = MixtureOfGaussiansPrior(2, n_components=2)
    with torch.no_grad():
        prior.log_vars.copy_(torch.tensor([[-500.0, 0.0], [300.0, 1.0]]))
    p = prior()
    expected = DiagonalGaussian(torch.zeros(2, 2), prior.log_vars.detach()).log_var
    torch.testing.assert_close(p.log_vars, expected)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: StandardNormalPrior(0), ValueError, r"`latent_dim` to be an int >= 1, got 0"),
        (lambda: StandardNormalPrior(2.0), TypeError, r"`latent_dim` to be an int, got 2.0 \(float\)"),
        (lambda: LearnableGaussianPrior(-1), ValueError, r"`latent_dim` to be an int >= 1, got -1"),
        (lambda: MixtureOfGaussiansPrior(2, n_components=0), ValueError, r"`n_components` to be an int >= 1"),
        (lambda: VampPrior((1, 4, 4), n_components="5"), TypeError, r"`n_components` to be an int, got '5'"),
        (lambda: VampPrior(784), TypeError, r"`input_shape` to be a sequence of ints, got 784"),
        (lambda: VampPrior((1, 0, 4)), ValueError, r"`input_shape` to be a non-empty sequence of sizes >= 1"),
        (lambda: VampPrior((1, 4, 4), latent_dim=0), ValueError, r"`latent_dim` to be an int >= 1, got 0"),
        (
            lambda: VampPrior((1, 4, 4), pseudo_input_activation="sigmoid"),
            ValueError,
            r"`pseudo_input_activation` to be one of .*'hardtanh'.*, got 'sigmoid'",
        ),
        (lambda: VampPrior((1, 4, 4), init_std=-0.1), ValueError, r"`init_std` to be a finite float >= 0"),
        (lambda: VampPrior((1, 4, 4), init_mean="0.5"), TypeError, r"`init_mean` to be a finite float, got '0.5'"),
    ],
)
def test_prior_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


# ---------------------------------------------------------------- large evaluations by matrix products
def _reference_mixture_log_prob(mixture: DiagonalGaussianMixture, z: torch.Tensor) -> torch.Tensor:
    """float64 ``torch.distributions`` density of the same mixture."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily

    components = Independent(Normal(mixture.locs.double(), torch.exp(0.5 * mixture.log_vars.double())), 1)
    reference = MixtureSameFamily(Categorical(logits=mixture._log_weights.double()), components)
    return reference.log_prob(z.double())


def _mixture(k: int, d: int, log_var_low: float = -6.0, seed: int = 0) -> DiagonalGaussianMixture:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, generator=g)
    locs = 2.0 * torch.randn(k, d, generator=g)
    log_vars = log_var_low + (0.5 - log_var_low) * torch.rand(k, d, generator=g)
    return DiagonalGaussianMixture(logits, locs, log_vars)


def test_large_mixture_evaluations_by_matrix_products_match_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    mixture = _mixture(500, 40)
    z = 2.0 * torch.randn(3, 400, 40, generator=torch.Generator().manual_seed(1))  # 1,200 x 500 x 40 = 24M >= 2^24
    calls = []
    expanded = DiagonalGaussianMixture._expanded_log_prob
    monkeypatch.setattr(
        DiagonalGaussianMixture, "_expanded_log_prob", lambda self, v: calls.append(1) or expanded(self, v)
    )
    with torch.no_grad():
        fast = mixture.log_prob(z)
    assert calls and fast.shape == (3, 400) and fast.dtype == torch.float32
    reference = _reference_mixture_log_prob(mixture, z)
    torch.testing.assert_close(fast.double(), reference, rtol=2e-7, atol=1e-4)
    # The per-component densities agree with the scale-safe form (what a step with gradients computes).
    with torch.no_grad():
        components = mixture.component_log_prob(z)
    exact = -0.5 * (((z.unsqueeze(-2) - mixture.locs) * mixture._inv_std).square().sum(-1) + mixture._log_norm)
    torch.testing.assert_close(components, exact, rtol=1e-5, atol=1e-3)
    # With gradients recorded, or below the size threshold, the scale-safe form is used.
    calls.clear()
    mixture.log_prob(z)
    with torch.no_grad():
        mixture.log_prob(z[:, :10])
    assert not calls


def test_large_mixture_evaluations_fall_back_where_float64_products_would_round() -> None:
    """Tiny variances far from the samples: the error bound exceeds 1e-4 nats and the scale-safe form answers."""
    mixture = _mixture(500, 40, log_var_low=-30.0)
    z = torch.randn(1200, 40, generator=torch.Generator().manual_seed(2))
    z[0, 0] = 1e4
    assert mixture._expanded_log_prob(z) is None
    with torch.no_grad():
        out = mixture.log_prob(z)
    torch.testing.assert_close(out.double(), _reference_mixture_log_prob(mixture, z), rtol=1e-6, atol=1e-2)
    # NaN or inf samples: no shortcut, the values show as the scale-safe form computes them.
    z[1, 3] = float("nan")
    assert mixture._expanded_log_prob(z) is None
    with torch.no_grad():
        out = mixture.log_prob(z)
    assert torch.isnan(out[1]) and torch.isfinite(out[2:]).all()
