"""Pure tensor math shared by the objective, metrics and callbacks."""

from lightning_vae.functional.kl import gaussian_kl, kl_per_dim
from lightning_vae.functional.math import bits_per_dim, log_mean_exp, soft_clamp
from lightning_vae.functional.schedules import (
    Schedule,
    capacity_schedule,
    constant_schedule,
    cosine_schedule,
    cyclical_schedule,
    linear_schedule,
    logistic_schedule,
)

__all__ = ["bits_per_dim", "gaussian_kl", "kl_per_dim", "log_mean_exp", "soft_clamp"]
__all__ += [
    "Schedule",
    "capacity_schedule",
    "constant_schedule",
    "cosine_schedule",
    "cyclical_schedule",
    "linear_schedule",
    "logistic_schedule",
]
