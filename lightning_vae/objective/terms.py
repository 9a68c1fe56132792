"""The parts of the objective: its named terms, the KL of a group, free bits, the IWAE bound, and its rules.

Reduction rule (docs/architecture.md): every term is summed over data and latent dimensions and averaged over
the batch, so every value is in nats per example. Free bits follow Kingma et al. (2016): the KL of
each latent dimension (or group, or the total) is averaged over the batch *before* ``max(λ, ·)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor
from torch.distributions import Distribution

from lightning_vae.distributions.full_covariance import FullCovarianceGaussian, full_covariance_kl
from lightning_vae.distributions.posteriors import diagonal_gaussian_params
from lightning_vae.distributions.priors import is_standard_normal
from lightning_vae.functional.kl import gaussian_kl, kl_per_dim
from lightning_vae.functional.math import at_least_float32, float32_region, log_mean_exp

FreeBitsMode = Literal["dim", "group", "total", "latent_group"]


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
        extra: Further named scalars an objective reports (logged as ``train/<name>``, ``val/<name>``), e.g.
            the parts of the KL a total-correlation objective weighs; ``None`` when it has none.

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
    extra: dict[str, Tensor] | None = None


def kl_terms(posterior: Distribution, prior: Distribution, z: Tensor) -> tuple[Tensor, Tensor | None]:
    """KL of each example and, where the KL factorises, of each element.

    Closed form when posterior and prior are both diagonal Gaussians, or the posterior is a
    full-covariance Gaussian and the prior a diagonal one (no elementwise form: it does not factorise);
    otherwise the Monte Carlo estimate ``log q(z|x) - log p(z)`` on the samples ``z`` (shape ``(S, B, D)``).

    Returns:
        ``(kl, elementwise)``: ``kl`` of shape ``(B,)`` (closed form) or ``(S, B)`` (Monte Carlo),
        and the elementwise KL of shape ``(B, D)`` or ``None``.
    """
    p_params = diagonal_gaussian_params(prior)
    if isinstance(posterior, FullCovarianceGaussian) and p_params is not None:
        if is_standard_normal(prior):
            return at_least_float32(full_covariance_kl(posterior)), None
        return at_least_float32(full_covariance_kl(posterior, p_params[0], p_params[1])), None
    q_params = diagonal_gaussian_params(posterior)
    if q_params is not None and p_params is not None:
        if is_standard_normal(prior):
            elementwise = gaussian_kl(q_params[0], q_params[1])
        else:
            elementwise = gaussian_kl(q_params[0], q_params[1], p_params[0], p_params[1])
        return elementwise.sum(-1), elementwise
    return at_least_float32(posterior.log_prob(z)) - at_least_float32(prior.log_prob(z)), None


def free_bits_penalty(
    kl: Tensor,
    elementwise: Tensor | None,
    free_bits: float,
    mode: FreeBitsMode = "dim",
    groups: int = 1,
    group_kls: Sequence[Tensor] | None = None,
) -> Tensor:
    """The KL term after free bits (Kingma et al. 2016), in nats per example.

    ``dim``: ``sum_d max(λ, mean_batch KL_d)``; ``group``: the same over ``groups`` equal groups
    of dimensions; ``total``: ``max(λ, mean_batch KL)``; ``latent_group``: ``sum_g max(λ, mean_batch KL_g)``
    over the model's latent groups (``group_kls``, the KL of each example in each group; one group: ``total``).
    With ``free_bits = 0`` it is the mean KL. Dimensions (groups) under λ contribute a constant, so they
    receive no gradient.

    Raises:
        ValueError: For an unknown mode, a bad group count, or a per-dimension mode when the KL
            does not factorise over dimensions.
    """
    if free_bits < 0:
        raise ValueError(f"Expected `free_bits` to be >= 0 nats, got {free_bits}")
    if free_bits == 0:
        return kl.mean()
    if mode == "total" or (mode == "latent_group" and group_kls is None):
        return kl.mean().clamp(min=free_bits)
    if mode == "latent_group":
        assert group_kls is not None
        return torch.stack([g.mean().clamp(min=free_bits) for g in group_kls]).sum()
    if mode not in ("dim", "group"):
        raise ValueError(f"Expected `free_bits_mode` to be one of {get_args(FreeBitsMode)}, got {mode!r}")
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
    "float32_region",
    "free_bits_penalty",
    "iwae_bound",
    "kl_terms",
]
