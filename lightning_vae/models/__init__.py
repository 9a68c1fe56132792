"""Latent-variable models: plain ``nn.Module``s with one inference path and one generative path.

:class:`LatentVariableModel` is the interface the training module, the objective, the metrics and the views use;
:class:`VAEModel` is the single-group model that ``VAE(encoder, decoder)`` builds; :class:`StackedVAEModel`
(Burda et al. 2015) and :class:`LadderVAEModel` (Sønderby et al. 2016) are hierarchical models with one latent
group per layer; :class:`ConditionalVAEModel` (Sohn et al. 2015) conditions both paths on a context and
:class:`M2Model` (Kingma et al. 2014) adds a classifier ``q(y | x)`` for semi-supervised learning.
"""

from lightning_vae.models.base import Generative, Inference, LatentVariableModel, ModelOutput
from lightning_vae.models.conditional import ConditionalVAEModel
from lightning_vae.models.flow import FlowVAEModel, PosteriorKind
from lightning_vae.models.hierarchical import HierarchicalModel, StackedVAEModel
from lightning_vae.models.ladder import LadderVAEModel
from lightning_vae.models.m2 import M2Model
from lightning_vae.models.vae import VAEModel

__all__ = [
    "Generative",
    "HierarchicalModel",
    "Inference",
    "LadderVAEModel",
    "LatentVariableModel",
    "ModelOutput",
    "StackedVAEModel",
    "VAEModel",
]
__all__ += ["FlowVAEModel", "PosteriorKind"]
__all__ += ["ConditionalVAEModel", "M2Model"]
