"""The training step's diagonal-Gaussian fast path: the same loss, gradients and reported values as the general path."""

from __future__ import annotations

import pytest
import torch
from support.modules import tiny_vae
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from lightning_vae import VAE
from lightning_vae.nets import MLPDecoder, MLPEncoder

DATA = {
    "bernoulli": lambda: torch.rand(6, 1, 8, 8).round(),
    "gaussian": lambda: torch.randn(6, 1, 8, 8),
    "gaussian_learned": lambda: torch.randn(6, 1, 8, 8),
    "gaussian_per_dim": lambda: torch.randn(6, 1, 8, 8),
    "laplace": lambda: torch.randn(6, 1, 8, 8),
    "categorical": lambda: torch.randint(0, 256, (6, 1, 8, 8)).float() / 255,
    "logistic_mixture": lambda: torch.randint(0, 256, (6, 1, 8, 8)).float() / 255,
}
PARAMS_PER_ELEMENT = {"categorical": 256, "logistic_mixture": 15}
SETTINGS = [
    {},
    {"beta": 0.25},
    {"free_bits": 0.5},
    {"free_bits": 0.5, "free_bits_mode": "group", "free_bits_groups": 2},
    {"free_bits": 3.0, "free_bits_mode": "total"},
    {"capacity": 2.0, "capacity_gamma": 10.0},
]


def _step(vae: VAE, x: Tensor, fast: bool, report: bool) -> tuple:
    vae._fast = fast
    vae.zero_grad()
    torch.manual_seed(7)
    terms = vae._training_terms(x, lambda: "test", report)
    terms.loss.backward()
    grads = [p.grad.clone() for p in vae.parameters() if p.grad is not None]
    return terms, grads


def _vae(likelihood: str, **settings) -> VAE:
    torch.manual_seed(0)
    per_element = PARAMS_PER_ELEMENT.get(likelihood, 1)
    decoder = MLPDecoder(4, (1, 8, 8), hidden_sizes=(32,), params_per_element=per_element)
    return VAE(MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(32,)), decoder, likelihood=likelihood, **settings)


@pytest.mark.parametrize("likelihood", sorted(DATA))
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()) or "plain")
def test_fast_and_general_paths_agree(likelihood: str, settings: dict) -> None:
    vae = _vae(likelihood, **settings)
    x = DATA[likelihood]()
    for report in (True, False):
        general, grads_general = _step(vae, x, fast=False, report=report)
        fast, grads_fast = _step(vae, x, fast=True, report=report)
        for name in ("loss", "recon", "kl", "kl_penalty", "elbo", "kl_per_dim", "log_weights"):
            a, b = getattr(general, name), getattr(fast, name)
            assert (a is None) == (b is None), name
            if a is not None:
                torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, msg=name)
        assert len(grads_general) == len(grads_fast) > 0
        for a, b in zip(grads_general, grads_fast):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_the_fast_path_is_taken_only_where_it_applies() -> None:
    x = torch.rand(4, 1, 8, 8).round()
    cases = {
        "standard normal, (loc, log_var) encoder": (tiny_vae(), True),
        "learnable prior": (tiny_vae(prior="learnable"), False),
        "mixture prior": (tiny_vae(prior="mixture"), False),
        "importance samples": (tiny_vae(n_samples=3), None),
    }

    class DistributionEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(16,))

        def forward(self, x: Tensor) -> Independent:
            loc, log_var = self.net(x)
            return Independent(Normal(loc, (0.5 * log_var).exp()), 1)

    cases["encoder returning a distribution"] = (
        VAE(DistributionEncoder(), MLPDecoder(4, (1, 8, 8), hidden_sizes=(16,)), latent_dim=4),
        False,
    )
    for name, (vae, expected) in cases.items():
        terms = vae._training_terms(x, lambda: "test", True)
        assert torch.isfinite(terms.loss), name
        if expected is not None:
            assert vae._fast is expected, name
    # After an encoder that returned a distribution, later steps stay on the general path and still train.
    vae = cases["encoder returning a distribution"][0]
    assert torch.isfinite(vae._training_terms(x, lambda: "test", False).loss)


def test_the_fast_path_keeps_the_data_and_shape_checks() -> None:
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"bernoulli likelihood expects targets in \[0, 1\]"):
        vae._training_terms(torch.full((2, 1, 8, 8), 255.0), lambda: "training batch 0", False)
    bad = VAE(MLPEncoder((1, 8, 8), latent_dim=4), MLPDecoder(4, (64,)))
    with pytest.raises(ValueError, match=r"decoder returned a tensor of shape \(2, 64\)"):
        bad._training_terms(torch.rand(2, 1, 8, 8).round(), lambda: "training batch 0", False)
