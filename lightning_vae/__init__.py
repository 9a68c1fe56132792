"""lightning-vae: variational autoencoders for PyTorch Lightning."""

from lightning_vae.objective import ELBOTerms, elbo, iwae_bound
from lightning_vae.training import VAE, VAEOutput

__version__ = "0.1.0"

__all__ = ["VAE", "ELBOTerms", "VAEOutput", "__version__", "elbo", "iwae_bound"]
