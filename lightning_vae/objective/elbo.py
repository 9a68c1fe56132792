"""The objective on one batch: the general form over named latent groups, and the diagonal-Gaussian fast path.

Both build the same loss from the same pieces (:func:`assemble`): the reconstruction term ``-log p(x|z)`` and
the KL of each example (with its per-dimension parts where the KL factorises). :func:`elbo_groups` takes
distributions and samples of any model; :func:`elbo_diagonal_gaussian` takes the encoder's ``(loc, log_var)``
of one group under a standard normal prior and builds no distribution object (the common training step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, Unpack

import torch
from torch import Tensor
from torch.distributions import Distribution

from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.functional.kl import gaussian_kl, kl_per_dim
from lightning_vae.functional.math import at_least_float32, log_mean_exp
from lightning_vae.objective.terms import (
    ELBOTerms,
    FreeBitsMode,
    check_single_sample,
    float32_region,
    free_bits_penalty,
    iwae_bound,
    kl_terms,
)


class Settings(TypedDict, total=False):
    """The objective's settings as keyword arguments (see :func:`elbo_groups`)."""

    beta: float
    free_bits: float
    free_bits_mode: FreeBitsMode
    free_bits_groups: int
    capacity: float | None
    capacity_gamma: float
    report: bool


def elbo(
    x: Tensor,
    posterior: Distribution,
    z: Tensor,
    decoder_output: Tensor,
    likelihood: Likelihood,
    prior: Distribution,
    **settings: Unpack[Settings],
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
            ``capacity_gamma`` and ``report`` as in :func:`elbo_groups`.

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
    group_betas: Mapping[str, float] | None = None,
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
            ``False`` leaves them ``None`` and computes the loss alone (same loss, same gradients).
        group_betas: Weights of chosen groups' KL in place of ``beta`` (annealing one group); the loss is then
            ``recon + Σ_g β_g · KL_g`` (after per-group free bits with ``free_bits_mode="latent_group"``).

    Raises:
        ValueError: For β < 0, negative free bits, samples of the wrong rank or disagreeing sample counts,
            free bits / capacity combined with k > 1, an unknown group in ``group_betas``, or ``group_betas``
            with the capacity objective, importance samples or a free-bits mode other than ``"latent_group"``.
    """
    names = list(posteriors)
    for name in names:
        if z[name].dim() != 3:
            raise ValueError(f"Expected samples `z` of group {name!r} of shape (k, B, D), got {tuple(z[name].shape)}")
    k = z[names[0]].shape[0]
    if any(z[name].shape[0] != k for name in names):
        raise ValueError(f"Expected the same number of samples in every group, got {[z[n].shape[0] for n in names]}")
    settings = (beta, free_bits, free_bits_mode, free_bits_groups, capacity, capacity_gamma)
    with float32_region(x.device):
        zf = {name: at_least_float32(z[name]) for name in names}
        nll = likelihood.nll(x, decoder_output)  # (k, B): -log p(x|z)
        parts = {name: kl_terms(posteriors[name], priors[name], zf[name]) for name in names}
        if len(names) == 1:
            kl, elementwise = parts[names[0]]
        else:
            kl = sum((part[0] for part in parts.values()), torch.zeros((), device=nll.device))
            elementwise = _concat_elementwise([part[1] for part in parts.values()])
        log_ratio = None
        if k > 1:  # log p(z) - log q(z|x), summed over groups
            log_ratio = sum(
                (
                    at_least_float32(priors[n].log_prob(zf[n])) - at_least_float32(posteriors[n].log_prob(zf[n]))
                    for n in names
                ),
                torch.zeros((), device=nll.device),
            )
        group_kls = [part[0] for part in parts.values()]
        if group_betas:
            terms = _weighted_groups(nll, kl, elementwise, names, group_kls, k, settings, report, group_betas)
        else:
            terms = assemble(nll, kl, elementwise, log_ratio, k, settings, report, group_kls)
        if report and len(names) > 1:
            with torch.no_grad():
                groups = {n: p[0].mean() for n, p in parts.items()}
                per_dim = {n: None if p[1] is None else kl_per_dim(p[1]) for n, p in parts.items()}
            terms = terms._replace(kl_groups=groups, kl_per_dim_groups=per_dim)
        elif report:
            terms = terms._replace(kl_groups={names[0]: terms.kl}, kl_per_dim_groups={names[0]: terms.kl_per_dim})
    return terms


def elbo_diagonal_gaussian(
    x: Tensor,
    loc: Tensor,
    log_var: Tensor,
    decoder_output: Tensor,
    likelihood: Likelihood,
    *,
    group: str = "z",
    **settings: Unpack[Settings],
) -> ELBOTerms:
    """The objective for one sample of one diagonal Gaussian group under ``N(0, I)``, from its parameters.

    The same loss, gradients and reported values as :func:`elbo_groups` with a
    :class:`~lightning_vae.distributions.DiagonalGaussian` posterior of ``(loc, log_var)`` and a standard normal
    prior, without building distribution objects.

    Args:
        x: Data batch ``(B, *data_shape)``.
        loc: Posterior means ``(B, D)``, float32.
        log_var: Posterior log-variances ``(B, D)``, float32, already soft-clamped as the posterior does.
        decoder_output: Likelihood parameters for the sample, ``(B, *param_shape)`` (no sample dimension).
        likelihood: Turns ``decoder_output`` into ``log p(x|z)``.
        group: The group's name in the reported per-group values.
        **settings: ``beta``, ``free_bits``, ``free_bits_mode``, ``free_bits_groups``, ``capacity``,
            ``capacity_gamma`` and ``report`` as in :func:`elbo_groups`.

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import BernoulliLikelihood
        >>> terms = elbo_diagonal_gaussian(torch.ones(4, 3), torch.zeros(4, 2), torch.zeros(4, 2),
        ...                                torch.zeros(4, 3), BernoulliLikelihood())
        >>> round(terms.kl.item(), 6), round(terms.recon.item(), 4)
        (0.0, 2.0794)
    """
    values = (
        settings.get("beta", 1.0),
        settings.get("free_bits", 0.0),
        settings.get("free_bits_mode", "dim"),
        settings.get("free_bits_groups", 1),
        settings.get("capacity"),
        settings.get("capacity_gamma", 1000.0),
    )
    return diagonal_gaussian_terms(x, loc, log_var, decoder_output, likelihood, values, settings.get("report", True))


#: The order of the settings tuple of :func:`diagonal_gaussian_terms` (and of the objective's internal helpers).
SETTING_NAMES = ("beta", "free_bits", "free_bits_mode", "free_bits_groups", "capacity", "capacity_gamma")


def diagonal_gaussian_terms(
    x: Tensor,
    loc: Tensor,
    log_var: Tensor,
    decoder_output: Tensor,
    likelihood: Likelihood,
    settings: tuple[Any, ...],
    report: bool,
    group: str = "z",
) -> ELBOTerms:
    """:func:`elbo_diagonal_gaussian` with its settings as a tuple in the order of :data:`SETTING_NAMES` (the
    training step's form: no keyword packing per step)."""
    with float32_region(x.device):
        nll = likelihood.nll(x, decoder_output)  # (B,)
        elementwise = gaussian_kl(loc, log_var)  # (B, D)
        terms = assemble(nll, elementwise.sum(-1), elementwise, None, 1, settings, report)
    if report:
        terms = terms._replace(kl_groups={group: terms.kl}, kl_per_dim_groups={group: terms.kl_per_dim})
    return terms


def assemble(
    nll: Tensor,
    kl: Tensor,
    elementwise: Tensor | None,
    log_ratio: Tensor | None,
    k: int,
    settings: tuple[Any, ...],
    report: bool,
    group_kls: list[Tensor] | None = None,
) -> ELBOTerms:
    """The loss and the reported values from ``-log p(x|z)`` ``(k, B)`` or ``(B,)`` and the KL of each example."""
    beta, free_bits, free_bits_mode, free_bits_groups, capacity, capacity_gamma = settings
    if beta < 0:
        raise ValueError(f"Expected `beta` to be >= 0, got {beta}")
    check_single_sample(k, free_bits, capacity)
    recon = nll.mean()
    kl_mean = kl.mean()
    log_weights: Tensor | None = None
    if log_ratio is not None:
        log_weights = log_ratio - nll
        weighted = log_weights if beta == 1.0 else beta * log_ratio - nll
        loss = -log_mean_exp(weighted, dim=0).mean()
        penalty = kl_mean
        log_weights = log_weights.detach()
    elif capacity is not None:
        if capacity < 0:
            raise ValueError(f"Expected `capacity` to be >= 0 nats, got {capacity}")
        penalty = (kl_mean - capacity).abs()
        loss = recon + capacity_gamma * penalty
    else:
        if free_bits == 0:
            penalty = kl_mean
            # One mean over the summed terms: a shorter backward pass than the two means' sum.
            loss = (nll + kl).mean() if beta == 1.0 else (nll + beta * kl).mean()
        else:
            penalty = free_bits_penalty(kl, elementwise, free_bits, free_bits_mode, free_bits_groups, group_kls)
            loss = recon + penalty if beta == 1.0 else recon + beta * penalty
    elbo_value = iwae = per_dim = None
    if report:  # reported values stay out of the autograd graph: read, never differentiated
        with torch.no_grad():
            if log_weights is None:
                # One sample: log p(x|z) - KL, with the KL in closed form where it exists (its Monte Carlo
                # estimate otherwise; same mean, and the closed form has lower variance).
                log_weights = -(nll + kl).reshape(1, -1) if nll.dim() == 1 else -(nll + kl)
            iwae = iwae_bound(log_weights) if k > 1 else None
            elbo_value = log_weights.mean()
            per_dim = None if elementwise is None else kl_per_dim(elementwise)
    return ELBOTerms(
        loss=loss,
        elbo=elbo_value,
        recon=recon,
        kl=kl_mean,
        kl_per_dim=per_dim,
        kl_penalty=penalty,
        iwae=iwae,
        log_weights=log_weights,
        kl_elementwise=elementwise,
    )


def _weighted_groups(
    nll: Tensor,
    kl: Tensor,
    elementwise: Tensor | None,
    names: list[str],
    group_kls: list[Tensor],
    k: int,
    settings: tuple[Any, ...],
    report: bool,
    group_betas: Mapping[str, float],
) -> ELBOTerms:
    """``recon + Σ_g β_g · KL_g`` with ``β_g`` from ``group_betas`` (else β), after per-group free bits."""
    beta, free_bits, free_bits_mode, _, capacity, _ = settings
    unknown = sorted(set(group_betas) - set(names))
    if unknown:
        raise ValueError(f"Expected `group_betas` to name latent groups of the model {names}, got {unknown}")
    if k > 1 or capacity is not None or (free_bits > 0 and free_bits_mode != "latent_group"):
        raise ValueError(
            "Expected per-group KL weights with the single-sample β-ELBO (free bits only with "
            f"free_bits_mode='latent_group'), got n_samples={k}, capacity={capacity}, free_bits_mode={free_bits_mode!r}"
        )
    if any(b < 0 for b in group_betas.values()):
        raise ValueError(f"Expected `group_betas` to be >= 0, got {dict(group_betas)}")
    penalties = [g.mean() if free_bits == 0 else g.mean().clamp(min=free_bits) for g in group_kls]
    weighted = sum((group_betas.get(n, beta) * p for n, p in zip(names, penalties)), torch.zeros((), device=nll.device))
    terms = assemble(nll, kl, elementwise, None, k, (1.0, 0.0, "total", 1, None, 1000.0), report)
    penalty = torch.stack(penalties).sum()
    return terms._replace(loss=terms.recon + weighted, kl_penalty=penalty)


def _concat_elementwise(parts: list[Tensor | None]) -> Tensor | None:
    """The elementwise KL of every group side by side, ``(..., B, sum D_g)``, or ``None`` if one does not factorise."""
    if any(part is None for part in parts):
        return None
    tensors = [part for part in parts if part is not None]
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], dim=-1)


__all__ = ["Settings", "elbo", "elbo_diagonal_gaussian", "elbo_groups"]
