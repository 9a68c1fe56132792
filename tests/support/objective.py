"""Data and models shared by the tests of the ELBO's two forms (the fast arithmetic and the general path)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_vae import VAE
from lightning_vae.data import Batch
from lightning_vae.nets import MLPDecoder, MLPEncoder
from lightning_vae.objective import ELBOTerms

#: A batch of data each likelihood accepts, 6 examples of shape (1, 8, 8).
DATA = {
    "bernoulli": lambda: torch.rand(6, 1, 8, 8).round(),
    "gaussian": lambda: torch.randn(6, 1, 8, 8),
    "gaussian_learned": lambda: torch.randn(6, 1, 8, 8),
    "gaussian_per_dim": lambda: torch.randn(6, 1, 8, 8),
    "laplace": lambda: torch.randn(6, 1, 8, 8),
    "categorical": lambda: torch.randint(0, 256, (6, 1, 8, 8)).float() / 255,
    "logistic_mixture": lambda: torch.randint(0, 256, (6, 1, 8, 8)).float() / 255,
}
#: Decoder outputs per data element of the likelihoods that need more than one.
PARAMS_PER_ELEMENT = {"categorical": 256, "logistic_mixture": 15}
#: The ELBO settings both forms must agree on.
SETTINGS = [
    {},
    {"beta": 0.25},
    {"free_bits": 0.5},
    {"free_bits": 0.5, "free_bits_mode": "group", "free_bits_groups": 2},
    {"free_bits": 3.0, "free_bits_mode": "total"},
    {"capacity": 2.0, "capacity_gamma": 10.0},
]


def make_vae(likelihood: str, log_var_bias: float = 0.0, **settings: Any) -> VAE:
    """A small VAE on (1, 8, 8) data; ``log_var_bias`` pushes the encoder's log-variances out of the clamp's range."""
    torch.manual_seed(0)
    encoder = MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(32,))
    per_element = PARAMS_PER_ELEMENT.get(likelihood, 1)
    decoder = MLPDecoder(4, (1, 8, 8), hidden_sizes=(32,), params_per_element=per_element)
    vae = VAE(encoder, decoder, likelihood=likelihood, **settings)
    if log_var_bias:
        with torch.no_grad():
            encoder.head.bias[4:] += log_var_bias
    return vae


def step(vae: VAE, x: Tensor, fast: bool, report: bool, seed: int = 7) -> tuple[ELBOTerms, list[Tensor]]:
    """One step's terms and gradients: the objective's training form (``fast``) or the general path."""
    vae.zero_grad()
    torch.manual_seed(seed)
    if fast:
        terms = vae.objective.training_terms(vae.model, Batch(x), report, check=True)
    else:
        terms = vae.compute_terms(x, report=report)[0]
    terms.loss.backward()
    grads = [p.grad.clone() for p in vae.parameters() if p.grad is not None]
    return terms, grads
