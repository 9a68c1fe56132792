"""The VAE objective: ELBO with β, free bits and capacity, and the IWAE bound, as pure functions.

Reduction rule (``docs/architecture.md``): every term is summed over data and latent dimensions and averaged over
the batch, so every value is in nats per example. Free bits follow Kingma et al. (2016): the KL of each latent
dimension (or group, or the total) is averaged over the batch *before* ``max(λ, ·)``.
"""

from lightning_vae.objective.elbo import elbo, elbo_diagonal_gaussian, elbo_groups
from lightning_vae.objective.terms import (
    ELBOTerms,
    FreeBitsMode,
    check_single_sample,
    free_bits_penalty,
    iwae_bound,
    kl_terms,
)

__all__ = [
    "ELBOTerms",
    "FreeBitsMode",
    "check_single_sample",
    "elbo",
    "elbo_diagonal_gaussian",
    "elbo_groups",
    "free_bits_penalty",
    "iwae_bound",
    "kl_terms",
]
