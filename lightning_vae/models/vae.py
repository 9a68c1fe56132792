"""``VAEModel``: the single-group latent-variable model around any encoder and decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.checks import check_choice, check_int, check_shape, check_type
from lightning_vae.distributions.likelihoods import LIKELIHOODS, Likelihood
from lightning_vae.distributions.posteriors import as_posterior
from lightning_vae.distributions.priors import (
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    Prior,
    StandardNormalPrior,
    VampPrior,
)
from lightning_vae.models.base import Generative, Inference, LatentVariableModel

LikelihoodName = Literal[
    "bernoulli", "gaussian", "gaussian_learned", "gaussian_per_dim", "laplace", "categorical", "logistic_mixture"
]
PriorName = Literal["standard_normal", "learnable", "mixture", "vamp"]


def make_likelihood(likelihood: LikelihoodName | Likelihood, data_shape: tuple[int, ...] | None) -> Likelihood:
    """A :class:`Likelihood` from its name (per-dimension likelihoods need ``data_shape``), or the one given."""
    if isinstance(likelihood, Likelihood):
        return likelihood
    if not isinstance(likelihood, str):
        raise TypeError(f"Expected `likelihood` to be a name or a Likelihood, got {likelihood!r}")
    check_choice("likelihood", likelihood, LikelihoodName)
    return LIKELIHOODS[likelihood](data_shape)


def make_prior(
    prior: PriorName | Prior, latent_dim: int | None, data_shape: tuple[int, ...] | None, components: int
) -> Prior:
    """A :class:`Prior` from its name and the sizes it needs, or the one given."""
    if isinstance(prior, Prior):
        return prior
    if not isinstance(prior, str):
        raise TypeError(f"Expected `prior` to be a name or a Prior, got {prior!r}")
    check_choice("prior", prior, PriorName)
    if prior == "standard_normal":
        return StandardNormalPrior(latent_dim)
    if prior == "vamp":
        if data_shape is None:
            raise ValueError("The VampPrior needs `data_shape` (the shape of one example), e.g. (1, 28, 28)")
        return VampPrior(data_shape, n_components=components, latent_dim=latent_dim)
    if latent_dim is None:
        raise ValueError(f"The {prior!r} prior needs `latent_dim` (the encoder has no `latent_dim` attribute)")
    if prior == "learnable":
        return LearnableGaussianPrior(latent_dim)
    return MixtureOfGaussiansPrior(latent_dim, n_components=components)


class VAEModel(LatentVariableModel):
    """One latent group ``"z"``: ``q(z|x)`` from the encoder, ``p(x|z)`` from the decoder, a prior ``p(z)``.

    The encoder maps ``x`` to ``(loc, log_var)`` each ``(B, D)``, or to a ``torch.distributions`` distribution
    with event shape ``(D,)``. The decoder maps ``z`` of shape ``(N, D)`` to the likelihood's parameters
    ``(N, *param_shape)``; the model flattens the sample dimension into the batch and back, so a decoder that
    accepts only ``(N, D)`` works in every path (training, ``log_joint``, sampling). An autoregressive decoder
    (``autoregressive = True``, e.g. :class:`~lightning_vae.nets.PixelCNNDecoder`) is called as ``decoder(z, x)``
    with the data repeated for each sample, and is sampled pixel by pixel.

    Args:
        encoder: Network ``x -> (loc, log_var)`` or a distribution.
        decoder: Network ``z -> likelihood parameters``.
        likelihood: A likelihood name or a :class:`~lightning_vae.distributions.Likelihood`.
        prior: A prior name or a :class:`~lightning_vae.distributions.Prior`.
        latent_dim: Size of ``z``; taken from ``encoder.latent_dim`` when left out (the standard normal prior
            can also learn it from the first batch, see :meth:`fix_shapes`).
        data_shape: Shape of one example; taken from ``encoder.input_shape`` when left out.
        prior_components: Components of the mixture prior or pseudo-inputs of the VampPrior.

    Example::

        >>> import torch
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> model = VAEModel(MLPEncoder((1, 28, 28), latent_dim=8), MLPDecoder(8, (1, 28, 28)))
        >>> inference, generative = model(torch.rand(4, 1, 28, 28), n_samples=3)
        >>> inference.z["z"].shape, generative.params.shape
        (torch.Size([3, 4, 8]), torch.Size([3, 4, 1, 28, 28]))
        >>> model.log_joint(torch.rand(4, 1, 28, 28).round(), inference.z["z"]).shape
        torch.Size([3, 4])
    """

    group_names = ("z",)

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: LikelihoodName | Likelihood = "bernoulli",
        prior: PriorName | Prior = "standard_normal",
        latent_dim: int | None = None,
        data_shape: Sequence[int] | None = None,
        prior_components: int = 10,
    ) -> None:
        super().__init__()
        self.encoder = check_type("encoder", encoder, nn.Module, "a torch.nn.Module")
        self.decoder = check_type("decoder", decoder, nn.Module, "a torch.nn.Module")
        latent_dim = latent_dim if latent_dim is not None else getattr(encoder, "latent_dim", None)
        if latent_dim is not None:
            check_int("latent_dim", latent_dim, low=1)
        shape = data_shape if data_shape is not None else getattr(encoder, "input_shape", None)
        self.data_shape = None if shape is None else check_shape("data_shape", shape)
        check_int("prior_components", prior_components, low=1)
        self.likelihood = make_likelihood(likelihood, self.data_shape)
        self.prior = make_prior(prior, latent_dim, self.data_shape, prior_components)

    # ------------------------------------------------------------------ sizes
    @property
    def latent_dim(self) -> int | None:
        """Size of ``z``, or ``None`` until :meth:`fix_shapes` has seen data."""
        return self.prior.latent_dim

    @property
    def autoregressive(self) -> bool:
        """Whether the decoder models ``p(x_i | x_<i, z)`` and takes ``(z, x)``."""
        return bool(getattr(self.decoder, "autoregressive", False))

    @property
    def fast_path(self) -> bool:
        """The ELBO's diagonal-Gaussian arithmetic applies: this class's own two paths (a subclass that replaces
        them, as the flow-posterior model does, does not qualify), the standard normal prior, a non-autoregressive
        decoder."""
        fast = self.__dict__.get("_fast_path")  # read on every training step: worked out once per set of parts
        if fast is None:
            paths = type(self).inference is VAEModel.inference and type(self).generative is VAEModel.generative
            fast = paths and type(self.prior) is StandardNormalPrior and not self.autoregressive
            self.__dict__["_fast_path"] = fast
        return fast

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in ("encoder", "decoder", "prior"):  # a part replaced: work :attr:`fast_path` out again
            self.__dict__.pop("_fast_path", None)

    def fix_shapes(self, x: Tensor | None = None) -> None:
        """Fix ``data_shape`` from a batch and the latent size from one encoder pass (no gradient, eval mode).

        Raises:
            ValueError: When a size is still unknown and there is nothing to learn it from.
        """
        super().fix_shapes(x)
        if self.prior.latent_dim is not None:
            return
        if x is None:
            if self.data_shape is None:
                raise ValueError(
                    "The latent size is unknown: the encoder has no `latent_dim` attribute and no data was seen. "
                    "Pass latent_dim=... or data_shape=..., or train or evaluate on a batch first"
                )
            x = torch.zeros(1, *self.data_shape, device=self._device())
        was_training = self.training
        self.eval()
        with torch.no_grad():
            self.prior.latent_dim = int(as_posterior(self.encoder(x[:1])).event_shape[0])
        self.train(was_training)

    def _device(self) -> torch.device:
        return next((p.device for p in self.parameters()), torch.device("cpu"))

    # ------------------------------------------------------------------ the two paths
    def prior_distribution(self) -> Distribution:
        """``p(z)`` as a distribution with event shape ``(D,)``."""
        return self.prior(self.encoder)

    def inference(self, x: Tensor, n_samples: int = 1) -> Inference:
        """``q(z|x)`` and ``n_samples`` reparameterised samples ``(k, B, D)``."""
        q = as_posterior(self.encoder(x))
        return Inference({"z": q}, {"z": q.rsample((n_samples,))})

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """The likelihood's parameters for latents ``z`` of shape ``(..., D)``: ``(..., *param_shape)``.

        An autoregressive decoder needs the data ``x`` of shape ``(B, *data_shape)``; ``z`` then has shape
        ``(..., B, D)``.
        """
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        if not self.autoregressive:
            params = self.decoder(flat)
        else:
            if x is None:
                raise ValueError(
                    f"The autoregressive decoder {type(self.decoder).__name__} needs the data: call decode(z, x)"
                )
            params = self.decoder(flat, x.expand(*lead, *x.shape[1:]).reshape(-1, *x.shape[1:]))
        return params.reshape(*lead, *params.shape[1:])

    def generative(self, z: Mapping[str, Tensor], x: Tensor | None = None) -> Generative:
        """The likelihood's parameters ``(k, B, *param_shape)`` and ``p(z)``."""
        return Generative(self.decode(z["z"], x), {"z": self.prior_distribution()})

    def prior_sample(self, n: int) -> dict[str, Tensor]:
        """``n`` samples of ``z`` from the prior, ``(1, n, D)``."""
        self.fix_shapes()
        return {"z": self.prior_distribution().sample((1, n)).to(self._device())}

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, context: Tensor | None = None) -> Tensor:
        """Draw ``n`` examples from the model: ``z ~ p(z)``, then the likelihood mean (or a sample of ``x``).

        An autoregressive decoder is sampled pixel by pixel in raster order (one decoder pass per pixel);
        ``mean=True`` then returns the mean of each pixel given the pixels drawn before it.
        """
        check_int("n", n, low=1)
        self._context(context)  # unconditional: refuses a context
        if not self.autoregressive:
            return super().sample(n, mean)
        z = self.prior_sample(n)["z"][0]
        shape = getattr(self.decoder, "image_shape", None) or self.data_shape
        if shape is None:
            raise ValueError("Sampling an autoregressive decoder needs `data_shape` (or a decoder with `image_shape`)")
        x = torch.zeros(n, *shape, device=z.device, dtype=z.dtype)
        for i in range(shape[-2]):
            for j in range(shape[-1]):
                x[..., i, j] = self.likelihood.sample(self.decoder(z, x))[..., i, j]
        params = self.decoder(z, x)
        return self.likelihood.mean(params) if mean else x

    @torch.no_grad()
    def reconstruct(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The likelihood mean at the posterior mean of ``x`` (an autoregressive decoder sees ``x`` itself)."""
        self._context(context)  # unconditional: refuses a context
        return self.likelihood.mean(self.decode(self.encode(x).mean, x))

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, data_shape={self.data_shape}"


__all__ = ["LikelihoodName", "PriorName", "VAEModel", "make_likelihood", "make_prior"]
