"""Pure tensor math shared by the objective, metrics and callbacks."""

from lightning_vae.functional.collapse import (
    active_units,
    count_collapsed,
    kl_to_standard_normal,
    merge_moments,
    mutual_information,
    posterior_mean_variance,
)
from lightning_vae.functional.disentanglement import mutual_information_gap
from lightning_vae.functional.kl import gaussian_kl, kl_per_dim
from lightning_vae.functional.math import at_least_float32, bits_per_dim, log_mean_exp, soft_clamp
from lightning_vae.functional.nll import SupportsLogJoint, iw_log_likelihood, iw_nll
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
    "bits_per_dim",
    "constant_schedule",
    "cosine_schedule",
    "count_collapsed",
    "cyclical_schedule",
    "gaussian_kl",
    "iw_log_likelihood",
    "iw_nll",
    "kl_per_dim",
    "kl_to_standard_normal",
    "linear_schedule",
    "log_mean_exp",
    "logistic_schedule",
    "merge_moments",
    "mutual_information",
    "mutual_information_gap",
    "posterior_mean_variance",
    "Schedule",
    "soft_clamp",
    "at_least_float32",
    "SupportsLogJoint",
]
