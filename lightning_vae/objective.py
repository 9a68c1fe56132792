"""The VAE objective: ELBO with β, free bits and capacity, and the IWAE bound, in one pure function.

Reduction rule (docs/architecture.md): every term is summed over data and latent dimensions and averaged over
the batch, so every value is in nats per example. Free bits follow Kingma et al. (2016): the KL of
each latent dimension (or group, or the total) is averaged over the batch *before* ``max(λ, ·)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.posteriors import DiagonalGaussian
from lightning_vae.distributions.priors import is_standard_normal
from lightning_vae.functional.kl import gaussian_kl, kl_per_dim
from lightning_vae.functional.math import log_mean_exp

FreeBitsMode = Literal["dim", "group", "total"]


class ELBOTerms(NamedTuple):
    """The named terms of one evaluation of the objective; scalars are nats per example.

    Attributes:
        loss: What the optimiser minimises (β, free bits, capacity or the IWAE bound applied).
        elbo: The plain ELBO (β = 1, no free bits), averaged over samples; higher is better.
        recon: The reconstruction term ``-E_q[log p(x|z)]``.
        kl: The raw KL term ``KL(q(z|x) || p(z))`` (closed form where available), before free bits.
        kl_per_dim: Batch-averaged KL of each latent dimension, shape ``(D,)``; ``None`` when the
            prior does not factorise over dimensions.
        kl_penalty: The KL term as it enters the loss before the β weight: after free bits, or
            ``|KL - C|`` in capacity form.
        iwae: The importance-weighted bound ``E[log 1/k sum_i w_i]`` for k > 1 samples, else ``None``.
        log_weights: ``log p(x, z_i) - log q(z_i | x)`` of shape ``(k, B)``.
        kl_groups: The batch-mean KL of each latent group (detached), in the model's group order.
        kl_per_dim_groups: Batch-averaged KL of each dimension of each group, ``(D_g,)``, or ``None`` for a
            group whose KL does not factorise over dimensions.
        kl_elementwise: The KL of each example and latent dimension of every group side by side (carries
            gradients), or ``None`` when a group's KL does not factorise.

    With ``report=False`` (:func:`elbo_groups`; the training steps whose values are not logged) the reported
    values ``elbo``, ``kl_per_dim``, ``iwae``, ``kl_groups``, ``kl_per_dim_groups`` and, for one sample,
    ``log_weights`` are ``None``: the loss and its gradients are the same.

    ``loss``, ``recon``, ``kl`` and ``kl_penalty`` carry gradients; ``elbo``, ``kl_per_dim``, ``iwae``
    and ``log_weights`` are reported values, detached from the graph (differentiate ``loss``).
    """

    loss: Tensor
    elbo: Tensor | None
    recon: Tensor
    kl: Tensor
    kl_per_dim: Tensor | None
    kl_penalty: Tensor
    iwae: Tensor | None
    log_weights: Tensor | None
    kl_groups: dict[str, Tensor] | None = None
    kl_per_dim_groups: dict[str, Tensor | None] | None = None
    kl_elementwise: Tensor | None = None


def _float32_region(device: torch.device) -> AbstractContextManager[None]:
    """Disable autocast so the objective's exp/log/softplus run in float32 (a no-op when autocast is off)."""
    try:
        if not torch.is_autocast_enabled(device.type):
            return nullcontext()
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know
        return nullcontext()


def _normal_params(d: Distribution) -> tuple[Tensor, Tensor] | None:
    """``(loc, log_var)`` of a diagonal Gaussian over vectors, or ``None`` for any other distribution."""
    if isinstance(d, DiagonalGaussian):
        return d.loc, d.log_var
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1:
        return d.base_dist.loc.float(), 2.0 * torch.log(d.base_dist.scale.float())
    return None


def kl_terms(posterior: Distribution, prior: Distribution, z: Tensor) -> tuple[Tensor, Tensor | None]:
    """KL of each example and, where the KL factorises, of each element.

    Closed form when posterior and prior are both diagonal Gaussians; otherwise the Monte Carlo
    estimate ``log q(z|x) - log p(z)`` on the samples ``z`` (shape ``(S, B, D)``).

    Returns:
        ``(kl, elementwise)``: ``kl`` of shape ``(B,)`` (closed form) or ``(S, B)`` (Monte Carlo),
        and the elementwise KL of shape ``(B, D)`` or ``None``.
    """
    q_params = _normal_params(posterior)
    p_params = _normal_params(prior)
    if q_params is not None and p_params is not None:
        if is_standard_normal(prior):
            elementwise = gaussian_kl(q_params[0], q_params[1])
        else:
            elementwise = gaussian_kl(q_params[0], q_params[1], p_params[0], p_params[1])
        return elementwise.sum(-1), elementwise
    return posterior.log_prob(z).float() - prior.log_prob(z).float(), None


def free_bits_penalty(
    kl: Tensor,
    elementwise: Tensor | None,
    free_bits: float,
    mode: FreeBitsMode = "dim",
    groups: int = 1,
) -> Tensor:
    """The KL term after free bits (Kingma et al. 2016), in nats per example.

    ``dim``: ``sum_d max(λ, mean_batch KL_d)``; ``group``: the same over ``groups`` equal groups
    of dimensions; ``total``: ``max(λ, mean_batch KL)``. With ``free_bits = 0`` it is the mean KL.
    Dimensions (groups) under λ contribute a constant, so they receive no gradient.

    Raises:
        ValueError: For an unknown mode, a bad group count, or a per-dimension mode when the KL
            does not factorise over dimensions.
    """
    if free_bits < 0:
        raise ValueError(f"Expected `free_bits` to be >= 0 nats, got {free_bits}")
    if free_bits == 0:
        return kl.mean()
    if mode == "total":
        return kl.mean().clamp(min=free_bits)
    if mode not in ("dim", "group"):
        raise ValueError(f"Expected `free_bits_mode` to be one of ('dim', 'group', 'total'), got {mode!r}")
    if elementwise is None:
        raise ValueError(
            f"free_bits_mode={mode!r} needs a KL that factorises over latent dimensions (a diagonal Gaussian "
            "posterior and prior); use free_bits_mode='total' with this prior"
        )
    per_dim = kl_per_dim(elementwise)
    if mode == "group":
        if groups <= 0 or per_dim.numel() % groups:
            raise ValueError(f"Expected `free_bits_groups` to divide the latent size {per_dim.numel()}, got {groups}")
        per_dim = per_dim.view(groups, -1).sum(-1)
    return per_dim.clamp(min=free_bits).sum()


def check_single_sample(n_samples: int, free_bits: float, capacity: float | None) -> None:
    """The rule that free bits and the capacity objective apply to the single-sample ELBO, stated once.

    Raises:
        ValueError: For ``n_samples > 1`` together with ``free_bits > 0`` or a ``capacity``.
    """
    if n_samples > 1 and (free_bits > 0 or capacity is not None):
        raise ValueError(
            f"Expected `n_samples` to be 1 with free bits or the capacity objective (they apply to the "
            f"single-sample ELBO), got n_samples={n_samples}; set n_samples=1, or free_bits=0 and capacity=None"
        )


def elbo(
    x: Tensor,
    posterior: Distribution,
    z: Tensor,
    decoder_output: Tensor,
    likelihood: Likelihood,
    prior: Distribution,
    **settings: Any,
) -> ELBOTerms:
    """Evaluate the objective on one batch of a model with one latent group: :func:`elbo_groups` for one group.

    Args:
        x: Data batch ``(B, *data_shape)``.
        posterior: q(z|x) with batch shape ``(B,)`` and event shape ``(D,)``.
        z: Samples from ``posterior``, shape ``(k, B, D)``.
        decoder_output: Likelihood parameters for each sample, ``(k, B, *param_shape)``.
        likelihood: Turns ``decoder_output`` into ``log p(x|z)``.
        prior: p(z) with event shape ``(D,)``.
        **settings: ``beta``, ``free_bits``, ``free_bits_mode``, ``free_bits_groups``, ``capacity``,
            ``capacity_gamma`` as in :func:`elbo_groups`.

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import BernoulliLikelihood, DiagonalGaussian, StandardNormal
        >>> q = DiagonalGaussian(torch.zeros(4, 2), torch.zeros(4, 2))
        >>> z = q.rsample((1,))
        >>> terms = elbo(torch.ones(4, 3), q, z, torch.zeros(1, 4, 3), BernoulliLikelihood(), StandardNormal(2))
        >>> round(terms.kl.item(), 6), round(terms.recon.item(), 4)  # q = prior; 3 * log 2
        (0.0, 2.0794)
    """
    return elbo_groups(x, {"z": posterior}, {"z": z}, decoder_output, likelihood, {"z": prior}, **settings)


def elbo_groups(
    x: Tensor,
    posteriors: Mapping[str, Distribution],
    z: Mapping[str, Tensor],
    decoder_output: Tensor,
    likelihood: Likelihood,
    priors: Mapping[str, Distribution],
    *,
    beta: float = 1.0,
    free_bits: float = 0.0,
    free_bits_mode: FreeBitsMode = "dim",
    free_bits_groups: int = 1,
    capacity: float | None = None,
    capacity_gamma: float = 1000.0,
    report: bool = True,
) -> ELBOTerms:
    """Evaluate the objective on one batch of a model with named latent groups.

    The KL is the sum over groups of ``KL(q(z_g | ...) || p(z_g | z_>g))`` (closed form where both are
    diagonal Gaussians, else Monte Carlo on the samples). With one sample (``z[g]`` of shape ``(1, B, D_g)``)
    the loss is the β-ELBO ``recon + β · KL_fb`` (free bits applied to the dimensions of every group together,
    in the groups' order), or ``recon + γ·|KL − C|`` when ``capacity`` C is given (Burgess et al. 2018). With
    ``k > 1`` samples it is the negative IWAE bound (Burda et al. 2015) with log-weights
    ``log p(x|z) + β Σ_g (log p(z_g|z_>g) − log q(z_g|x, ...))``; β = 1 gives the exact bound.

    Args:
        x: Data batch ``(B, *data_shape)``.
        posteriors: q of each group, event shape ``(D_g,)``.
        z: Samples of each group, ``(k, B, D_g)``.
        decoder_output: Likelihood parameters for each sample, ``(k, B, *param_shape)``.
        likelihood: Turns ``decoder_output`` into ``log p(x|z)``.
        priors: p of each group, event shape ``(D_g,)``.
        beta: Weight of the KL term (β-VAE, annealing).
        free_bits: λ in nats; 0 disables free bits.
        free_bits_mode: ``"dim"``, ``"group"`` or ``"total"``.
        free_bits_groups: Number of equal groups of latent dimensions for ``"group"``.
        capacity: Target KL C in nats for the capacity form, or ``None``.
        capacity_gamma: γ of the capacity form.
        report: Compute the reported values (the ELBO, the KL per dimension and per group, the IWAE bound);
            ``False`` leaves them ``None`` and computes the loss alone.

    Raises:
        ValueError: For β < 0, negative free bits, samples of the wrong rank or disagreeing sample counts, or
            free bits / capacity combined with k > 1.
    """
    if beta < 0:
        raise ValueError(f"Expected `beta` to be >= 0, got {beta}")
    names = list(posteriors)
    for name in names:
        if z[name].dim() != 3:
            raise ValueError(f"Expected samples `z` of group {name!r} of shape (k, B, D), got {tuple(z[name].shape)}")
    k = z[names[0]].shape[0]
    if any(z[name].shape[0] != k for name in names):
        raise ValueError(f"Expected the same number of samples in every group, got {[z[n].shape[0] for n in names]}")
    check_single_sample(k, free_bits, capacity)
    with _float32_region(x.device):
        zf = {name: z[name].float() for name in names}
        nll = likelihood.nll(x, decoder_output)  # (k, B): -log p(x|z)
        parts = {name: kl_terms(posteriors[name], priors[name], zf[name]) for name in names}
        kl = sum((part[0] for part in parts.values()), torch.zeros((), device=nll.device))
        elementwise = _concat_elementwise([part[1] for part in parts.values()])
        recon = nll.mean()
        kl_mean = kl.mean()
        log_weights: Tensor | None = None
        if k > 1:
            log_ratio = sum(
                (priors[n].log_prob(zf[n]).float() - posteriors[n].log_prob(zf[n]).float() for n in names),
                torch.zeros((), device=nll.device),
            )  # log p(z) - log q(z|x)
            log_weights = log_ratio - nll
            weighted = log_weights if beta == 1.0 else beta * log_ratio - nll
            loss = -log_mean_exp(weighted, dim=0).mean()
            penalty = kl_mean
        elif capacity is not None:
            if capacity < 0:
                raise ValueError(f"Expected `capacity` to be >= 0 nats, got {capacity}")
            penalty = (kl_mean - capacity).abs()
            loss = recon + capacity_gamma * penalty
        else:
            penalty = (
                kl_mean
                if free_bits == 0
                else free_bits_penalty(kl, elementwise, free_bits, free_bits_mode, free_bits_groups)
            )
            loss = recon + penalty if beta == 1.0 else recon + beta * penalty
        # The reported terms stay out of the autograd graph: they are read, never differentiated.
        elbo_value = iwae = per_dim = None
        per_dim_groups: dict[str, Tensor | None] | None = None
        kl_groups: dict[str, Tensor] | None = None
        if log_weights is not None:
            log_weights = log_weights.detach()
        if report:
            with torch.no_grad():
                if log_weights is None:
                    # One sample: log p(x|z) - KL, with the KL in closed form where it exists (its Monte Carlo
                    # estimate otherwise; same mean, and the closed form has lower variance).
                    log_weights = -(nll + kl)  # (1, B) + (B,) or (1, B)
                iwae = iwae_bound(log_weights) if k > 1 else None
                elbo_value = log_weights.mean()
                per_dim_groups = {n: None if p[1] is None else kl_per_dim(p[1]) for n, p in parts.items()}
                per_dim = None if elementwise is None else kl_per_dim(elementwise)
                kl_groups = {n: p[0].mean() for n, p in parts.items()} if len(names) > 1 else {names[0]: kl_mean}
    return ELBOTerms(
        loss=loss,
        elbo=elbo_value,
        recon=recon,
        kl=kl_mean,
        kl_per_dim=per_dim,
        kl_penalty=penalty,
        iwae=iwae,
        log_weights=log_weights,
        kl_groups=kl_groups,
        kl_per_dim_groups=per_dim_groups,
        kl_elementwise=elementwise,
    )


def _concat_elementwise(parts: list[Tensor | None]) -> Tensor | None:
    """The elementwise KL of every group side by side, ``(..., B, sum D_g)``, or ``None`` if one does not factorise."""
    if any(part is None for part in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    tensors = [part for part in parts if part is not None]
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], dim=-1)


def iwae_bound(log_weights: Tensor) -> Tensor:
    """``mean_B [logsumexp_i log w_i − log k]`` for log-weights of shape ``(k, B)``.

    Example::

        >>> import torch
        >>> round(iwae_bound(torch.zeros(5, 3)).item(), 6)
        0.0
    """
    return log_mean_exp(log_weights, dim=0).mean()


__all__ = [
    "ELBOTerms",
    "FreeBitsMode",
    "check_single_sample",
    "elbo",
    "elbo_groups",
    "free_bits_penalty",
    "iwae_bound",
    "kl_terms",
]
