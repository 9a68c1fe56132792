"""The exported graphs: encoder, decoder and sampler as ``nn.Module``s a tracer or exporter can take."""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MixtureSameFamily, Normal

from lightning_vae.distributions.posteriors import LOG_VAR_RANGE, DiagonalGaussian, as_posterior
from lightning_vae.functional.math import soft_clamp


class ExportError(RuntimeError):
    """A model, or a part of it, that cannot be exported; the message says which part and why."""


class EncoderGraph(nn.Module):
    """``x -> (loc, log_var)`` of q(z|x), as :meth:`VAE.encode` gives them (the log-variance soft-clamped).

    Example::

        >>> import torch
        >>> from lightning_vae.nets import MLPEncoder
        >>> loc, log_var = EncoderGraph(MLPEncoder((1, 4, 4), latent_dim=3))(torch.rand(5, 1, 4, 4))
        >>> loc.shape, log_var.shape
        (torch.Size([5, 3]), torch.Size([5, 3]))
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor, *context: Tensor) -> tuple[Tensor, Tensor]:
        out = self.encoder(x, *context)
        if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out):
            # What DiagonalGaussian computes from (loc, log_var), without its shape checks (they would be traced).
            return out[0].float(), soft_clamp(out[1].float(), *LOG_VAR_RANGE)
        q = as_posterior(out)
        if isinstance(q, DiagonalGaussian):
            return q.loc, q.log_var
        return q.mean, q.variance.log()


class DecoderGraph(nn.Module):
    """``z -> likelihood mean``: the decoder followed by the likelihood's mean (data space).

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import BernoulliLikelihood
        >>> from lightning_vae.nets import MLPDecoder
        >>> DecoderGraph(MLPDecoder(3, (1, 4, 4)), BernoulliLikelihood())(torch.zeros(2, 3)).shape
        torch.Size([2, 1, 4, 4])
    """

    def __init__(self, decoder: nn.Module, likelihood: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.likelihood = likelihood

    def forward(self, z: Tensor) -> Tensor:
        return self.likelihood.mean(self.decoder(z))  # type: ignore[operator,no-any-return]


class _CodedEncoder(nn.Module):
    """A conditional model's encoder fed its context vector: ``(x, context) -> encoder(x, code(context))``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, context: Tensor) -> object:
        return self.model.encoder(x, self.model.code(context))  # type: ignore[operator]


class ConditionalEncoderGraph(EncoderGraph):
    """``(x, context) -> (loc, log_var)`` of q(z | x, c) of a conditional model.

    ``context`` is a float ``(B, C)``: one-hot rows of the class for a model conditional on labels (labels embedded
    by the model go through its embedding here), the feature vector for a model conditional on features.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(_CodedEncoder(model))

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return super().forward(x, context)  # named inputs: torch.export's dynamic shapes go by name


class ConditionalDecoderGraph(nn.Module):
    """``(z, context) -> likelihood mean`` of a conditional model (``context`` as :class:`ConditionalEncoderGraph`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, context: Tensor) -> Tensor:
        model = self.model
        return model.likelihood.mean(model.decoder(z, model.code(context)))  # type: ignore[operator,no-any-return]


class ConditionalSamplerGraph(nn.Module):
    """``(noise, context[, uniform]) -> sample``: a :class:`SamplerGraph`'s latent, decoded at ``context``."""

    def __init__(self, sampler: SamplerGraph, decoder: ConditionalDecoderGraph) -> None:
        super().__init__()
        self.sampler, self.decoder = sampler, decoder

    @property
    def mixture(self) -> bool:
        return bool(self.sampler.mixture)

    def forward(self, noise: Tensor, context: Tensor, uniform: Tensor | None = None) -> Tensor:
        return self.decoder(self.sampler.latent(noise, uniform), context)  # type: ignore[no-any-return]


def _gaussian_parts(p: Distribution) -> tuple[Tensor, Tensor] | None:
    """``(loc, scale)`` of a diagonal Gaussian over vectors, else ``None``."""
    if isinstance(p, DiagonalGaussian):
        return p.loc, p.base_dist.scale
    if isinstance(p, Independent) and isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1:
        return p.base_dist.loc, p.base_dist.scale
    return None


class SamplerGraph(nn.Module):
    """``noise (B, D) [, uniform (B,)] -> sample``: standard normal noise through the prior, then the decoder graph.

    The prior's parameters are read once, when the graph is built, and held as constants.

    Args:
        decoder: The :class:`DecoderGraph`.
        prior: The prior as a distribution with event shape ``(D,)``: a diagonal Gaussian, or a
            ``MixtureSameFamily`` of diagonal Gaussians (then ``forward`` also takes ``uniform``).

    Raises:
        ExportError: For any other prior.

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import BernoulliLikelihood, DiagonalGaussian
        >>> from lightning_vae.nets import MLPDecoder
        >>> decoder = DecoderGraph(MLPDecoder(3, (1, 4, 4)), BernoulliLikelihood())
        >>> sampler = SamplerGraph(decoder, DiagonalGaussian(torch.zeros(3), torch.zeros(3)))
        >>> sampler(torch.randn(6, 3)).shape, sampler.mixture
        (torch.Size([6, 1, 4, 4]), False)
    """

    loc: Tensor
    scale: Tensor
    cdf: Tensor

    def __init__(self, decoder: nn.Module, prior: Distribution) -> None:
        super().__init__()
        self.decoder = decoder
        gaussian = _gaussian_parts(prior)
        if gaussian is not None:
            loc, scale = (t.detach().float().reshape(1, -1) for t in gaussian)
            self.mixture = False
            self.register_buffer("loc", loc.clone())
            self.register_buffer("scale", scale.clone())
            return
        if isinstance(prior, MixtureSameFamily):
            components = _gaussian_parts(prior.component_distribution)
            if components is not None and components[0].dim() == 2:
                probs = prior.mixture_distribution.probs.detach().float()
                cdf = probs.cumsum(0) / probs.sum()
                self.mixture = True
                self.register_buffer("loc", components[0].detach().float().clone())  # (K, D)
                self.register_buffer("scale", components[1].detach().float().clone())
                self.register_buffer("cdf", cdf[:-1].clone())  # the K - 1 inner boundaries
                return
        raise ExportError(
            f"Cannot export a sampler for the prior {type(prior).__name__}: the sampler maps standard normal noise "
            "through a diagonal Gaussian or a mixture of diagonal Gaussians. Export --parts encoder decoder and draw "
            "z from the prior yourself"
        )

    def latent(self, noise: Tensor, uniform: Tensor | None = None) -> Tensor:
        """The latent ``z (B, D)`` the noise stands for."""
        if not self.mixture:
            return self.loc + self.scale * noise
        if uniform is None:
            raise ValueError("The sampler of a mixture prior needs `uniform` (B,) in [0, 1) to pick the components")
        index = (uniform.unsqueeze(-1) >= self.cdf).long().sum(-1)  # (B,): the component whose interval holds u
        return self.loc[index] + self.scale[index] * noise

    def forward(self, noise: Tensor, uniform: Tensor | None = None) -> Tensor:
        return self.decoder(self.latent(noise, uniform))  # type: ignore[no-any-return]


__all__ = [
    "ConditionalDecoderGraph",
    "ConditionalEncoderGraph",
    "ConditionalSamplerGraph",
    "DecoderGraph",
    "EncoderGraph",
    "ExportError",
    "SamplerGraph",
]
