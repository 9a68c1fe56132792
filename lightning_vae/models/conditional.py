"""``ConditionalVAEModel``: the conditional VAE of Sohn, Lee & Yan (2015), ``q(z | x, c)`` and ``p(x | z, c)``.

The context ``c`` is whatever :func:`~lightning_vae.data.read_batch` finds beside the data: class labels (one-hot
encoded or embedded here), or a tensor of features (used as it is). The model turns it into one vector per example
(:meth:`ConditionalVAEModel.code`) and hands that vector to both networks: ``encoder(x, code) -> (loc, log_var)``
and ``decoder(z, code) -> likelihood parameters`` (:class:`~lightning_vae.nets.ConditionalMLPEncoder` and
:class:`~lightning_vae.nets.ConditionalMLPDecoder` keep this contract). The prior ``p(z)`` does not depend on ``c``
(Sohn et al.'s "baseline" prior; a prior network ``p(z | c)`` is a subclass's :meth:`generative`).

Everything built on the two paths takes the context on unchanged: the objective, ``log_joint`` (``log p(x, z |
c)``), the importance-weighted NLL (``-log p(x | c)``), ``sample(n, context=...)``, ``reconstruct``, the collapse
monitor, annealing and the exports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.building import describe_all
from lightning_vae.checks import check_int, check_shape, check_type
from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.posteriors import as_posterior
from lightning_vae.distributions.priors import Prior, VampPrior
from lightning_vae.models.base import Generative, Inference, LatentVariableModel
from lightning_vae.models.vae import LikelihoodName, PriorName, make_likelihood, make_prior


class ConditionalVAEModel(HyperparametersMixin, LatentVariableModel):
    """One latent group ``"z"`` conditioned on a context: ``q(z | x, c)``, ``p(x | z, c)``, ``p(z)``.

    The context is either class labels (``n_classes`` given): integer labels ``(B,)``, one-hot encoded, or embedded
    in ``embedding_dim`` learned dimensions; a floating ``(B, n_classes)`` tensor is taken as (soft) one-hot rows;
    or a tensor of features (``n_classes=None``): floating ``(B, ...)``, flattened to ``(B, F)``.

    Args:
        encoder: Network ``(x, code) -> (loc, log_var)`` (or a distribution with event shape ``(D,)``).
        decoder: Network ``(z, code) -> likelihood parameters``, ``z`` of shape ``(N, D)``.
        likelihood: A likelihood name or a :class:`~lightning_vae.distributions.Likelihood`.
        prior: ``"standard_normal"``, ``"learnable"``, ``"mixture"`` or a :class:`~lightning_vae.distributions.Prior`
            (not the VampPrior: its pseudo-inputs would need a context).
        n_classes: Number of classes when the context is labels; ``None`` when it is a feature tensor.
        embedding_dim: Learned embedding size of the labels; ``None`` one-hot encodes them.
        latent_dim: Size of ``z``; taken from ``encoder.latent_dim`` when left out.
        data_shape: Shape of one example; taken from ``encoder.input_shape`` when left out.
        prior_components: Components of the mixture prior.

    Raises:
        TypeError: For networks that are not modules.
        ValueError: For a latent size that is not given and not on the encoder, ``embedding_dim`` without
            ``n_classes``, or the VampPrior.

    Example::

        >>> import torch
        >>> from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder
        >>> model = ConditionalVAEModel(
        ...     ConditionalMLPEncoder((1, 28, 28), context_dim=10, latent_dim=8),
        ...     ConditionalMLPDecoder(8, 10, (1, 28, 28)),
        ...     n_classes=10,
        ... )
        >>> x, y = torch.rand(4, 1, 28, 28).round(), torch.tensor([0, 1, 2, 3])
        >>> inference, generative = model(x, n_samples=3, context=y)
        >>> generative.params.shape, model.log_joint(x, inference.z["z"], context=y).shape
        (torch.Size([3, 4, 1, 28, 28]), torch.Size([3, 4]))
        >>> model.sample(2, context=torch.tensor([7, 7])).shape
        torch.Size([2, 1, 28, 28])
    """

    conditional = True
    group_names = ("z",)

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: LikelihoodName | Likelihood = "bernoulli",
        prior: PriorName | Prior = "standard_normal",
        n_classes: int | None = None,
        embedding_dim: int | None = None,
        latent_dim: int | None = None,
        data_shape: Sequence[int] | None = None,
        prior_components: int = 10,
    ) -> None:
        super().__init__()
        self.encoder = check_type("encoder", encoder, nn.Module, "a torch.nn.Module")
        self.decoder = check_type("decoder", decoder, nn.Module, "a torch.nn.Module")
        latent_dim = latent_dim if latent_dim is not None else getattr(encoder, "latent_dim", None)
        if latent_dim is None:
            raise ValueError(
                "ConditionalVAEModel needs `latent_dim` (the encoder has no `latent_dim` attribute): pass it"
            )
        check_int("latent_dim", latent_dim, low=1)
        shape = data_shape if data_shape is not None else getattr(encoder, "input_shape", None)
        self.data_shape = None if shape is None else check_shape("data_shape", shape)
        self.n_classes = None if n_classes is None else check_int("n_classes", n_classes, low=1)
        if embedding_dim is not None and n_classes is None:
            raise ValueError("Expected `embedding_dim` only with `n_classes` (labels are embedded), got n_classes=None")
        self.embedding = (
            None
            if embedding_dim is None or self.n_classes is None
            else nn.Embedding(self.n_classes, check_int("embedding_dim", embedding_dim, low=1))
        )
        if prior == "vamp" or isinstance(prior, VampPrior):
            raise ValueError(
                "Expected a prior that needs no data (standard_normal, learnable, mixture), got the VampPrior"
            )
        self.likelihood = make_likelihood(likelihood, self.data_shape)
        self.prior = make_prior(
            prior, int(latent_dim), self.data_shape, check_int("prior_components", prior_components, low=1)
        )
        self.record(
            encoder=encoder,
            decoder=decoder,
            likelihood=likelihood,
            prior=prior,
            n_classes=n_classes,
            embedding_dim=embedding_dim,
            latent_dim=latent_dim,
            data_shape=None if data_shape is None else list(data_shape),
            prior_components=prior_components,
        )

    def record(self, **arguments: Any) -> None:
        """Record the constructor's arguments (networks as ``class_path``/``init_args``) so a checkpoint rebuilds the
        model alone; when a network cannot be described (it records nothing), record none: a reload then needs the
        model passed again. A subclass with other arguments records them after ``super().__init__`` (as
        :class:`~lightning_vae.models.M2Model` does)."""
        described = describe_all(arguments)
        if described is None:
            return
        self.hparams.clear()  # a subclass's record replaces its base's
        self.save_hyperparameters(described, logger=False)

    @property
    def latent_dim(self) -> int | None:
        """Size of ``z``."""
        return self.prior.latent_dim

    @property
    def context_dim(self) -> int | None:
        """Size of the vector the networks receive: ``n_classes`` (one-hot), ``embedding_dim``, or ``None`` (features:
        the feature size)."""
        if self.embedding is not None:
            return int(self.embedding.embedding_dim)
        return self.n_classes

    def _device(self) -> torch.device:
        return next((p.device for p in self.parameters()), torch.device("cpu"))

    def _dtype(self) -> torch.dtype:
        param = next((p for p in self.parameters() if p.is_floating_point()), None)
        return torch.float32 if param is None else param.dtype

    # ------------------------------------------------------------------ the context
    def code(self, context: Tensor, batch: int | None = None) -> Tensor:
        """The context as one vector per example, ``(B, context_dim)`` (what the networks receive).

        Raises:
            TypeError: If ``context`` is not a tensor, or holds labels of a floating type that is not one row per
                class (or features of an integer type).
            ValueError: For a batch size other than ``batch``, or labels outside ``[0, n_classes)`` (checked on the
                CPU, where reading them costs nothing).
        """
        if not isinstance(context, Tensor):
            raise TypeError(f"Expected `context` to be a tensor, got {type(context).__name__}")
        if batch is not None and (context.dim() == 0 or context.shape[0] != batch):
            raise ValueError(
                f"Expected a `context` of batch size {batch} (one per example), got shape {tuple(context.shape)}"
            )
        dtype = self._dtype()
        if self.n_classes is None:
            if not context.is_floating_point():
                raise TypeError(f"Expected a floating feature tensor as `context` (no n_classes), got {context.dtype}")
            return context.reshape(context.shape[0], -1).to(dtype)
        if context.is_floating_point():
            if context.dim() != 2 or context.shape[1] != self.n_classes:
                raise TypeError(
                    f"Expected integer labels (B,) or one-hot rows (B, {self.n_classes}) as `context`, got a floating "
                    f"tensor of shape {tuple(context.shape)}"
                )
            rows = context.to(dtype)
            return rows if self.embedding is None else rows @ self.embedding.weight
        labels = context.reshape(-1) if context.dim() == 2 and context.shape[1] == 1 else context
        if labels.dim() != 1:
            raise ValueError(f"Expected labels of shape (B,), got shape {tuple(context.shape)}")
        if (
            labels.device.type == "cpu"
            and labels.numel()
            and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes)
        ):
            raise ValueError(
                f"Expected labels in [0, {self.n_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
            )
        labels = labels.long()
        if self.embedding is not None:
            return self.embedding(labels)  # type: ignore[no-any-return]
        return F.one_hot(labels, self.n_classes).to(dtype)

    # ------------------------------------------------------------------ the two paths
    def prior_distribution(self) -> Distribution:
        """``p(z)``, event shape ``(D,)``."""
        return self.prior(None)  # type: ignore[no-any-return]

    def inference(self, x: Tensor, n_samples: int = 1, context: Tensor | None = None) -> Inference:  # type: ignore[override]
        """``q(z | x, c)`` and ``n_samples`` reparameterised samples ``(k, B, D)``."""
        code = self.code(self._require(context), x.shape[0])
        q = as_posterior(self.encoder(x, code))
        return Inference({"z": q}, {"z": q.rsample((n_samples,))})

    def decode_coded(self, z: Tensor, code: Tensor) -> Tensor:
        """The likelihood's parameters for ``z`` ``(..., B, D)`` and context vectors ``code`` ``(B, C)``.

        Not named ``decode``: ``VAE.decode(z)`` is the unconditional single-group decoder, which this model has not
        (it refuses, naming ``vae.model``); decode at a context through :meth:`generative`.
        """
        lead = z.shape[:-1]
        flat_code = code.expand(*lead, code.shape[-1]).reshape(-1, code.shape[-1])
        params = self.decoder(z.reshape(-1, z.shape[-1]), flat_code)
        return params.reshape(*lead, *params.shape[1:])  # type: ignore[no-any-return]

    def generative(  # type: ignore[override]
        self, z: Mapping[str, Tensor], x: Tensor | None = None, context: Tensor | None = None
    ) -> Generative:
        """The likelihood's parameters ``(k, B, *param_shape)`` given ``z`` and the context, and ``p(z)``."""
        samples = z["z"]
        code = self.code(self._require(context), samples.shape[-2])
        return Generative(self.decode_coded(samples, code), {"z": self.prior_distribution()})

    def prior_sample(self, n: int) -> dict[str, Tensor]:
        """``n`` samples of ``z`` from the prior, ``(1, n, D)``."""
        return {"z": self.prior_distribution().sample((1, n)).to(self._device())}

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, context: Tensor | None = None) -> Tensor:
        """``n`` examples from ``p(x | z, c)``, ``z ~ p(z)``; ``context`` holds ``n`` contexts (or one, repeated)."""
        check_int("n", n, low=1)
        context = self._require(context)
        if context.dim() > 0 and context.shape[0] == 1 and n > 1:
            context = context.expand(n, *context.shape[1:])
        return super().sample(n, mean, context=context)

    def _require(self, context: Tensor | None) -> Tensor:
        if context is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass a `context` (e.g. the batch's labels)")
        return context

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, n_classes={self.n_classes}, data_shape={self.data_shape}"


__all__ = ["ConditionalVAEModel"]
