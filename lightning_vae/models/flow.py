"""``FlowVAEModel``: the single-group model with a richer posterior (IAF, planar flows, full covariance)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.building import describe_all
from lightning_vae.checks import check_choice, check_int, check_shape
from lightning_vae.distributions.flows import FlowPosterior, PlanarFlow, iaf_steps
from lightning_vae.distributions.full_covariance import FullCovarianceGaussian, n_lower
from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.posteriors import LOG_VAR_RANGE, DiagonalGaussian
from lightning_vae.distributions.priors import Prior, VampPrior
from lightning_vae.functional.math import at_least_float32, soft_clamp
from lightning_vae.models.base import Inference
from lightning_vae.models.vae import LikelihoodName, PriorName, VAEModel

PosteriorKind = Literal["iaf", "planar", "full_covariance", "diagonal"]


class FlowVAEModel(HyperparametersMixin, VAEModel):
    """One latent group ``"z"`` whose posterior is a diagonal Gaussian made richer by flows or a full covariance.

    The encoder maps ``x`` to ``(loc, log_var)`` each ``(B, D)``, or ``(loc, log_var, h)`` with a context
    ``h`` of shape ``(B, context_dim)``. The posterior is, by ``posterior``:

    - ``"iaf"``: ``N(loc, diag(exp(log_var)))`` pushed through ``n_flows`` inverse autoregressive flow steps
      (Kingma et al. 2016) whose MADEs (hidden widths ``hidden_sizes``) alternate their order and see ``h``;
    - ``"planar"``: the same Gaussian through ``n_flows`` planar flows (Rezende & Mohamed 2015) with global
      parameters;
    - ``"full_covariance"``: ``N(loc, L Lᵀ)`` with ``L``'s diagonal ``exp(log_var / 2)`` and its strictly-lower
      entries a linear function of ``h`` (or, without ``h``, of ``(loc, log_var)``), initialised at zero so
      training starts from the diagonal posterior; its KL to a diagonal Gaussian prior is in closed form;
    - ``"diagonal"``: the diagonal Gaussian itself (the :class:`VAEModel` posterior).

    The flows' KL is the Monte Carlo estimate ``log q(z|x) - log p(z)`` with ``log q`` exact by the change of
    variables at the samples drawn (see :class:`~lightning_vae.distributions.FlowPosterior`); ``n_flows`` and
    ``hidden_sizes`` apply to the flows only. Decoder, likelihood, prior, decoding, sampling and ``log_joint``
    are :class:`VAEModel`'s; the VampPrior, which evaluates posteriors of pseudo-inputs at any ``z``, is
    available with the diagonal posterior only.

    When the encoder, decoder, likelihood and prior record their arguments (the built-in ones do) the model
    records its own, so ``VAE(model=FlowVAEModel(...))`` reloads from a checkpoint alone; otherwise pass
    ``model=FlowVAEModel(...)`` again to ``VAE.load_from_checkpoint``.

    Args:
        encoder: Network ``x -> (loc, log_var)`` or ``(loc, log_var, h)``.
        decoder: Network ``z -> likelihood parameters``.
        posterior: ``"iaf"``, ``"planar"``, ``"full_covariance"`` or ``"diagonal"``.
        n_flows: Flow steps of ``"iaf"`` and ``"planar"``.
        hidden_sizes: Hidden widths of each IAF step's MADE.
        context_dim: Size of the encoder's ``h`` (``"iaf"`` and ``"full_covariance"``); 0 when it returns none.
        likelihood: A likelihood name or a :class:`~lightning_vae.distributions.Likelihood`.
        prior: A prior name or a :class:`~lightning_vae.distributions.Prior`.
        latent_dim: Size of ``z``; taken from ``encoder.latent_dim`` when left out (needed at construction).
        data_shape: Shape of one example; taken from ``encoder.input_shape`` when left out.
        prior_components: Components of the mixture prior.

    Raises:
        ValueError: For an unknown posterior, a missing encoder or decoder or latent size, a context with a
            posterior that takes none, or the VampPrior with a non-diagonal posterior.

    Example::

        >>> import torch
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> model = FlowVAEModel(MLPEncoder((1, 8, 8), latent_dim=4), MLPDecoder(4, (1, 8, 8)), n_flows=2)
        >>> inference, generative = model(torch.rand(5, 1, 8, 8), n_samples=3)
        >>> inference.z["z"].shape, generative.params.shape
        (torch.Size([3, 5, 4]), torch.Size([3, 5, 1, 8, 8]))
        >>> inference.posteriors["z"].log_prob(inference.z["z"]).shape
        torch.Size([3, 5])
    """

    def __init__(
        self,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        posterior: PosteriorKind = "iaf",
        n_flows: int = 2,
        hidden_sizes: Sequence[int] = (64,),
        context_dim: int = 0,
        likelihood: LikelihoodName | Likelihood = "bernoulli",
        prior: PriorName | Prior = "standard_normal",
        latent_dim: int | None = None,
        data_shape: Sequence[int] | None = None,
        prior_components: int = 10,
    ) -> None:
        if encoder is None or decoder is None:
            raise ValueError(
                "FlowVAEModel needs an `encoder` and a `decoder`. A checkpoint of a model whose parts do not record "
                "their arguments cannot rebuild it: pass model=FlowVAEModel(...) to VAE.load_from_checkpoint"
            )
        check_choice("posterior", posterior, PosteriorKind)
        n_flows = check_int("n_flows", n_flows, low=0)
        hidden = check_shape("hidden_sizes", hidden_sizes)
        check_int("context_dim", context_dim, low=0)
        if context_dim > 0 and posterior not in ("iaf", "full_covariance"):
            raise ValueError(
                f"Expected `context_dim` to be 0 for posterior={posterior!r} (only 'iaf' and 'full_covariance' use the "
                f"encoder's context h), got {context_dim}"
            )
        if posterior != "diagonal" and (prior == "vamp" or isinstance(prior, VampPrior)):
            raise ValueError(
                f"The VampPrior evaluates posteriors of pseudo-inputs at any z, which posterior={posterior!r} cannot; "
                "use posterior='diagonal' with it, or another prior"
            )
        VAEModel.__init__(self, encoder, decoder, likelihood, prior, latent_dim, data_shape, prior_components)
        self.posterior_kind: PosteriorKind = posterior
        self.context_dim = context_dim
        dim = self._resolve_latent_dim(latent_dim)
        flows: list[nn.Module] = []
        if posterior == "iaf":
            flows = list(iaf_steps(dim, n_flows, hidden, context_dim))
        elif posterior == "planar":
            flows = [PlanarFlow(dim) for _ in range(n_flows)]
        self.flows = nn.ModuleList(flows)
        self.lower_head: nn.Linear | None = None
        if posterior == "full_covariance" and dim > 1:
            self.lower_head = nn.Linear(context_dim or 2 * dim, n_lower(dim))
            nn.init.zeros_(self.lower_head.weight)
            nn.init.zeros_(self.lower_head.bias)
        settings: dict[str, Any] = {"posterior": posterior, "n_flows": n_flows, "hidden_sizes": list(hidden)}
        settings.update(context_dim=context_dim, latent_dim=dim, prior_components=prior_components)
        settings["data_shape"] = None if self.data_shape is None else list(self.data_shape)
        self._record({"encoder": encoder, "decoder": decoder, "likelihood": likelihood, "prior": prior}, settings)

    def _resolve_latent_dim(self, latent_dim: int | None) -> int:
        dim = latent_dim if latent_dim is not None else getattr(self.encoder, "latent_dim", None)
        dim = dim if dim is not None else self.prior.latent_dim
        if dim is None:
            raise ValueError(
                "FlowVAEModel needs the latent size at construction (its flows are built for it): pass latent_dim=..."
            )
        if self.prior.latent_dim is None:
            self.prior.latent_dim = int(dim)
        elif self.prior.latent_dim != dim:
            raise ValueError(f"Expected the prior's latent size {self.prior.latent_dim} to be `latent_dim`, got {dim}")
        return int(dim)

    def _record(self, parts: dict[str, Any], settings: dict[str, Any]) -> None:
        """Record the arguments when every part can be described; else record none (a reload needs the model)."""
        described = describe_all(parts)
        if described is not None:
            self.save_hyperparameters({**described, **settings}, logger=False)

    # ------------------------------------------------------------------ the posterior
    def posterior_distribution(self, x: Tensor) -> Distribution:
        """``q(z|x)`` with batch shape ``(B,)`` and event shape ``(D,)``, as ``posterior`` chose."""
        loc, log_var, h = self._split(self.encoder(x))
        if self.posterior_kind == "full_covariance":
            if self.lower_head is None:
                lower = loc.new_zeros(*loc.shape[:-1], 0)
            else:
                clamped = soft_clamp(at_least_float32(log_var), *LOG_VAR_RANGE)
                lower = self.lower_head(h if h is not None else torch.cat([at_least_float32(loc), clamped], dim=-1))
            return FullCovarianceGaussian(loc, log_var, lower)
        base = DiagonalGaussian(loc, log_var)
        if self.posterior_kind == "diagonal":
            return base
        return FlowPosterior(base, list(self.flows), h)  # type: ignore[arg-type]

    def inference(self, x: Tensor, n_samples: int = 1) -> Inference:
        """``q(z|x)`` and ``n_samples`` reparameterised samples ``(k, B, D)`` (the tensor ``q.log_prob`` knows)."""
        q = self.posterior_distribution(x)
        return Inference({"z": q}, {"z": q.rsample((n_samples,))})

    def _split(self, out: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        if not (isinstance(out, (tuple, list)) and len(out) in (2, 3) and all(isinstance(t, Tensor) for t in out)):
            raise TypeError(
                f"Expected the encoder to return a tuple (loc, log_var) or (loc, log_var, h) of tensors, got {out!r}"
                if not isinstance(out, (tuple, list))
                else f"Expected the encoder to return (loc, log_var) or (loc, log_var, h), got {len(out)} items"
            )
        loc, log_var = out[0], out[1]
        h = out[2] if len(out) == 3 else None
        if (h is None) != (self.context_dim == 0):
            raise ValueError(
                f"Expected the encoder to return (loc, log_var, h) with h of size context_dim={self.context_dim}, got "
                f"{len(out)} outputs" if self.context_dim else
                "The encoder returned a context h but context_dim=0: pass context_dim=<size of h> to FlowVAEModel"
            )  # fmt: skip
        if loc.dim() != 2 or loc.shape[-1] != self.latent_dim:
            raise ValueError(f"Expected the encoder's `loc` of shape (B, {self.latent_dim}), got {tuple(loc.shape)}")
        if h is not None and h.shape != (loc.shape[0], self.context_dim):
            expected = (loc.shape[0], self.context_dim)
            raise ValueError(f"Expected the context h of shape {expected}, got {tuple(h.shape)}")
        return loc, log_var, h

    def extra_repr(self) -> str:
        return f"posterior={self.posterior_kind!r}, n_flows={len(self.flows)}, " + super().extra_repr()


__all__ = ["FlowVAEModel", "PosteriorKind"]
