"""Pure tensor math shared by the objective, metrics and callbacks."""

from lightning_vae.functional.kl import gaussian_kl, kl_per_dim
from lightning_vae.functional.math import bits_per_dim, log_mean_exp, soft_clamp

__all__ = ["bits_per_dim", "gaussian_kl", "kl_per_dim", "log_mean_exp", "soft_clamp"]
