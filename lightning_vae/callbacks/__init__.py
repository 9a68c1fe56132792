"""Callbacks that plug into any Lightning pipeline training a VAE (or any module keeping the annealing protocol)."""

from lightning_vae.callbacks.annealing import CapacityAnnealing, KLAnnealing
from lightning_vae.callbacks.free_bits import FreeBits
from lightning_vae.callbacks.target_rate import TargetRate

__all__ = ["CapacityAnnealing", "FreeBits", "KLAnnealing", "TargetRate"]
