"""``M2Model``: the semi-supervised generative model M2 of Kingma, Rezende, Mohamed & Welling (2014).

``p(y) p(z) p(x | y, z)`` with ``p(y)`` uniform over the classes and ``p(z) = N(0, I)``; inference networks
``q(z | x, y)`` and a classifier ``q(y | x)``. Given the label, the model is a conditional VAE (the label is the
context): :class:`~lightning_vae.models.ConditionalVAEModel` supplies both paths, so ``log_joint`` is
``log p(x, z | y)`` and the importance-weighted NLL is ``-log p(x | y)``. The classifier is what the semi-supervised
objective (:class:`lightning_vae.objective.M2`) adds: it sums the bound over the classes under ``q(y | x)`` for the
examples without a label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from lightning_vae.checks import check_type
from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.models.conditional import ConditionalVAEModel
from lightning_vae.models.vae import LikelihoodName


class M2Model(ConditionalVAEModel):
    """M2: a conditional VAE on one-hot labels with a classifier ``q(y | x)``.

    Args:
        encoder: Network ``(x, one_hot_y) -> (loc, log_var)`` of ``q(z | x, y)``.
        decoder: Network ``(z, one_hot_y) -> likelihood parameters`` of ``p(x | y, z)``.
        classifier: Network ``x -> logits (B, n_classes)`` of ``q(y | x)``.
        n_classes: Number of classes.
        likelihood: A likelihood name or a :class:`~lightning_vae.distributions.Likelihood`.
        latent_dim: Size of ``z``; taken from ``encoder.latent_dim`` when left out.
        data_shape: Shape of one example; taken from ``encoder.input_shape`` when left out.

    Example::

        >>> import torch
        >>> from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder, MLPClassifier
        >>> model = M2Model(
        ...     ConditionalMLPEncoder((1, 28, 28), context_dim=10, latent_dim=8),
        ...     ConditionalMLPDecoder(8, 10, (1, 28, 28)),
        ...     MLPClassifier((1, 28, 28), n_classes=10),
        ...     n_classes=10,
        ... )
        >>> model.classify(torch.rand(4, 1, 28, 28)).shape, round(model.log_prior_y, 4)
        (torch.Size([4, 10]), -2.3026)
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        classifier: nn.Module,
        n_classes: int = 10,
        likelihood: LikelihoodName | Likelihood = "bernoulli",
        latent_dim: int | None = None,
        data_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            encoder, decoder, likelihood, n_classes=n_classes, latent_dim=latent_dim, data_shape=data_shape
        )
        self.classifier = check_type("classifier", classifier, nn.Module, "a torch.nn.Module")
        self.record(
            encoder=encoder,
            decoder=decoder,
            classifier=classifier,
            n_classes=n_classes,
            likelihood=likelihood,
            latent_dim=latent_dim,
            data_shape=None if data_shape is None else list(data_shape),
        )

    @property
    def log_prior_y(self) -> float:
        """``log p(y) = -log n_classes`` (the uniform label prior)."""
        return -math.log(self.n_classes or 1)

    def classify(self, x: Tensor) -> Tensor:
        """The logits of ``q(y | x)``, ``(B, n_classes)``."""
        return self.classifier(x)  # type: ignore[no-any-return]


__all__ = ["M2Model"]
