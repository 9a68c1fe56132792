"""Posterior, priors and likelihoods of the VAE."""

from lightning_vae.distributions.flows import Flow, FlowPosterior, IAFStep, PlanarFlow
from lightning_vae.distributions.full_covariance import FullCovarianceGaussian, full_covariance_kl
from lightning_vae.distributions.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    CategoricalLikelihood,
    DiscretizedLogisticMixtureLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    Likelihood,
)
from lightning_vae.distributions.posteriors import DiagonalGaussian, as_posterior
from lightning_vae.distributions.priors import (
    DiagonalGaussianMixture,
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    Prior,
    StandardNormal,
    StandardNormalPrior,
    VampPrior,
)

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "DiagonalGaussian",
    "DiagonalGaussianMixture",
    "DiscretizedLogisticMixtureLikelihood",
    "GaussianLikelihood",
    "LaplaceLikelihood",
    "LearnableGaussianPrior",
    "Likelihood",
    "MixtureOfGaussiansPrior",
    "Prior",
    "StandardNormal",
    "StandardNormalPrior",
    "VampPrior",
    "as_posterior",
]
__all__ += ["Flow", "FlowPosterior", "FullCovarianceGaussian", "IAFStep", "PlanarFlow", "full_covariance_kl"]
