"""The model's parts and paths read through the training module (a mixin of ``VAE``): ``vae.encoder``, ..."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.priors import Prior
from lightning_vae.models.base import LatentVariableModel, as_model_input


class ModelParts(LightningModule):
    """``encoder``, ``decoder``, ``likelihood``, ``prior``, ``encode``, ``log_joint``, ... of ``self.model``.

    Parts a model does not have (a hierarchical model has no single ``prior`` module) raise ``AttributeError``
    naming the model.
    """

    model: LatentVariableModel

    @property
    def encoder(self) -> nn.Module:
        """The model's encoder (a single-group model's; other models may not have one)."""
        return self._part("encoder")

    @property
    def decoder(self) -> nn.Module:
        """The model's decoder."""
        return self._part("decoder")

    @property
    def likelihood(self) -> Likelihood:
        """The model's likelihood ``p(x | z)``."""
        return self.model.likelihood

    @property
    def prior(self) -> Prior:
        """The model's prior module (a single-group model's)."""
        return self._part("prior")

    @property
    def data_shape(self) -> tuple[int, ...] | None:
        """The shape of one example, or ``None`` until known."""
        return self.model.data_shape

    @property
    def autoregressive(self) -> bool:
        """Whether the decoder takes ``(z, x)`` (a PixelCNN decoder)."""
        return bool(getattr(self.model, "autoregressive", False))

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """The likelihood's parameters for latents ``z`` of shape ``(..., D)`` (a single-group model's decoder)."""
        return self._part("decode")(self._input(z), None if x is None else self._input(x))  # type: ignore[no-any-return]

    def prior_distribution(self) -> Distribution:
        """``p(z)`` with event shape ``(D,)`` (a single-group model's prior)."""
        return self._part("prior_distribution")()  # type: ignore[no-any-return]

    def _part(self, name: str) -> Any:
        part = getattr(self.model, name, None)
        if part is None:
            raise AttributeError(f"{type(self.model).__name__} has no `{name}`: use vae.model and its latent groups")
        return part

    def _input(self, t: Tensor) -> Tensor:
        """A floating input in the model's floating type (see :func:`~lightning_vae.models.base.as_model_input`)."""
        return as_model_input(self.model, t)

    def encode(self, x: Tensor) -> Distribution:
        """q(z|x) of the model's first latent group."""
        return self.model.encode(self._input(x))

    def log_joint(self, x: Tensor, z: Tensor | Mapping[str, Tensor]) -> Tensor:
        """``log p(x, z)`` in nats, shape ``(S, B)`` (the importance-weighted NLL's protocol, with :meth:`encode`)."""
        z = self._input(z) if isinstance(z, Tensor) else {name: self._input(v) for name, v in z.items()}
        return self.model.log_joint(self._input(x), z)

    def log_weights(self, x: Tensor, n_samples: int) -> Tensor:
        """Importance log-weights over every latent group, ``(n_samples, B)`` (what the IW-NLL averages)."""
        return self.model.log_weights(self._input(x), n_samples)

    def sample(self, n: int, mean: bool = True) -> Tensor:
        """Draw ``n`` examples from the model (the likelihood's mean, or a sample of ``x``)."""
        return self.model.sample(n, mean)

    def reconstruct(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x`` in data space."""
        return self.model.reconstruct(self._input(x))


__all__ = ["ModelParts"]
