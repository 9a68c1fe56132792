"""Pure tensor math shared by the objective, metrics and callbacks."""

from lightning_vae.functional.collapse import (
    active_units,
    count_collapsed,
    kl_to_standard_normal,
    merge_moments,
    mutual_information,
    posterior_mean_variance,
)
from lightning_vae.functional.dci import dci
from lightning_vae.functional.disentanglement import mutual_information_gap
from lightning_vae.functional.interventional import beta_vae_score, factor_vae_score, posterior_means, sample_codes
from lightning_vae.functional.kl import gaussian_kl, kl_per_dim
from lightning_vae.functional.kl_decomposition import (
    aggregate_log_density,
    kl_decomposition,
    minibatch_kl_decomposition,
    minibatch_log_density,
)
from lightning_vae.functional.math import at_least_float32, bits_per_dim, log_mean_exp, soft_clamp
from lightning_vae.functional.nll import SupportsLogJoint, iw_log_likelihood, iw_nll
from lightning_vae.functional.regularizers import (
    density_ratio_tc,
    dip_covariance,
    dip_regularizer,
    discriminator_loss,
    mmd,
    permute_dims,
)
from lightning_vae.functional.sap import sap
from lightning_vae.functional.schedules import (
    Schedule,
    constant_schedule,
    cosine_schedule,
    cyclical_schedule,
    linear_schedule,
    logistic_schedule,
)

__all__ = [
    "active_units",
    "aggregate_log_density",
    "beta_vae_score",
    "bits_per_dim",
    "constant_schedule",
    "cosine_schedule",
    "count_collapsed",
    "cyclical_schedule",
    "dci",
    "density_ratio_tc",
    "dip_covariance",
    "dip_regularizer",
    "discriminator_loss",
    "factor_vae_score",
    "gaussian_kl",
    "iw_log_likelihood",
    "iw_nll",
    "kl_decomposition",
    "kl_per_dim",
    "kl_to_standard_normal",
    "linear_schedule",
    "log_mean_exp",
    "logistic_schedule",
    "merge_moments",
    "minibatch_kl_decomposition",
    "minibatch_log_density",
    "mmd",
    "mutual_information",
    "mutual_information_gap",
    "permute_dims",
    "posterior_mean_variance",
    "posterior_means",
    "sample_codes",
    "sap",
    "Schedule",
    "soft_clamp",
    "at_least_float32",
    "SupportsLogJoint",
]
