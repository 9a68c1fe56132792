"""Objectives: the loss a :class:`~lightning_vae.VAE` minimises, as plug-ins with one contract.

:class:`Objective` is the contract (``lightning_vae/objective/base.py``); :class:`ELBO` (β, free bits, capacity) and
:class:`IWAE` are the built-in objectives (with :class:`M2`, the semi-supervised objective of Kingma et al. 2014);
:class:`BetaTCVAE`, :class:`FactorVAE`, :class:`DIPVAE` and :class:`InfoVAE` weigh parts of the KL term or penalise the
aggregate posterior (the disentangling objectives), and :func:`elbo_groups` / :func:`elbo_diagonal_gaussian` the same
arithmetic as pure functions. Reduction rule (``docs/architecture.md``): every term is summed over data and latent
dimensions and averaged over the batch, so every value is in nats per example. Free bits follow Kingma et al.
(2016): the KL of each latent dimension (or group, or the total) is averaged over the batch *before* ``max(λ, ·)``.
"""

from lightning_vae.objective.base import (
    OBJECTIVES,
    GaussianCodes,
    Objective,
    RunFacts,
    check_single_gaussian_group,
    gaussian_codes,
    make_objective,
    model_pass,
)
from lightning_vae.objective.beta_tcvae import BetaTCVAE
from lightning_vae.objective.dip_vae import DIPVAE
from lightning_vae.objective.elbo import (
    ELBO,
    IWAE,
    ELBOSettings,
    elbo,
    elbo_diagonal_gaussian,
    elbo_groups,
    elbo_terms,
)
from lightning_vae.objective.factor_vae import FactorVAE
from lightning_vae.objective.info_vae import InfoVAE
from lightning_vae.objective.m2 import M2, enumerate_classes, labelled_bound, unlabelled_bound
from lightning_vae.objective.terms import (
    ELBOTerms,
    FreeBitsMode,
    free_bits_penalty,
    iwae_bound,
    kl_terms,
)

__all__ = [
    "DIPVAE",
    "ELBO",
    "IWAE",
    "M2",
    "OBJECTIVES",
    "BetaTCVAE",
    "ELBOSettings",
    "ELBOTerms",
    "FactorVAE",
    "FreeBitsMode",
    "GaussianCodes",
    "InfoVAE",
    "Objective",
    "RunFacts",
    "check_single_gaussian_group",
    "elbo",
    "elbo_diagonal_gaussian",
    "elbo_groups",
    "elbo_terms",
    "enumerate_classes",
    "free_bits_penalty",
    "gaussian_codes",
    "iwae_bound",
    "kl_terms",
    "labelled_bound",
    "make_objective",
    "model_pass",
    "unlabelled_bound",
]
