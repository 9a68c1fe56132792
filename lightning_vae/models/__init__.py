"""Latent-variable models: plain ``nn.Module``s with one inference path and one generative path.

:class:`LatentVariableModel` is the interface the training module, the objective, the metrics and the views use;
:class:`VAEModel` is the single-group model that ``VAE(encoder, decoder)`` builds.
"""

from lightning_vae.models.base import Generative, Inference, LatentVariableModel, ModelOutput
from lightning_vae.models.vae import VAEModel

__all__ = ["Generative", "Inference", "LatentVariableModel", "ModelOutput", "VAEModel"]
