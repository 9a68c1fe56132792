"""The ELBO family: β-ELBO, free bits, the capacity form and the IWAE bound, as objectives and as pure functions.

:class:`ELBOSettings` is the one value that holds (and checks) the family's settings; :class:`ELBO` and
:class:`IWAE` are the objectives built on it. Both forms build the same loss from the same pieces
(:func:`assemble`): the reconstruction term ``-log p(x|z)`` and the KL of each example (with its per-dimension parts
where the KL factorises). :func:`elbo_groups` takes distributions and samples of any model;
:func:`elbo_diagonal_gaussian` takes the encoder's ``(loc, log_var)`` of one group under a standard normal prior
and builds no distribution object: the arithmetic of :meth:`ELBO.training_terms` for models whose ``fast_path``
says they qualify.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypedDict, Unpack

import torch
from torch import Tensor
from torch.distributions import Distribution

from lightning_vae.checks import check_choice, check_float, check_int, check_single_sample, check_type
from lightning_vae.data.common import Batch
from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.posteriors import as_posterior, clamp_log_var
from lightning_vae.functional.kl import gaussian_kl, kl_per_dim
from lightning_vae.functional.math import at_least_float32, log_mean_exp
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.objective.base import Objective
from lightning_vae.objective.terms import (
    ELBOTerms,
    FreeBitsMode,
    float32_region,
    free_bits_penalty,
    iwae_bound,
    kl_terms,
)


@dataclasses.dataclass(frozen=True)
class ELBOSettings:
    """The settings of the ELBO family, checked once when the value is made (construction, a setter, a checkpoint).

    Attributes:
        beta: Weight of the KL term (β-VAE, annealing); >= 0.
        free_bits: λ in nats (Kingma et al. 2016); 0 disables free bits.
        free_bits_mode: ``"dim"`` (each latent dimension), ``"group"`` (equal groups of dimensions), ``"total"``
            or ``"latent_group"`` (each of the model's latent groups).
        free_bits_groups: Number of equal groups of latent dimensions for ``"group"``.
        capacity: Target KL C in nats of the capacity form ``recon + γ|KL − C|`` (Burgess et al. 2018), or ``None``.
        capacity_gamma: γ of the capacity form; > 0.
        n_samples: Importance samples k; above 1 the loss is the negative IWAE bound (Burda et al. 2015).
        group_betas: Weights of chosen latent groups' KL in place of β (annealing one group of a hierarchy).

    Example::

        >>> s = ELBOSettings(beta=4.0)
        >>> s.replace(beta=0.5).beta, s.beta
        (0.5, 4.0)
        >>> ELBOSettings(free_bits=0.5, n_samples=5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected `n_samples` to be 1 for free bits or the capacity objective ...
    """

    beta: float = 1.0
    free_bits: float = 0.0
    free_bits_mode: FreeBitsMode = "dim"
    free_bits_groups: int = 1
    capacity: float | None = None
    capacity_gamma: float = 1000.0
    n_samples: int = 1
    group_betas: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: the checked values replace the given ones once, here
        fix(self, "beta", check_float("beta", self.beta, low=0.0))
        fix(self, "free_bits", check_float("free_bits", self.free_bits, low=0.0))
        fix(self, "free_bits_mode", check_choice("free_bits_mode", self.free_bits_mode, FreeBitsMode))
        fix(self, "free_bits_groups", check_int("free_bits_groups", self.free_bits_groups, low=1))
        if self.capacity is not None:
            fix(self, "capacity", check_float("capacity", self.capacity, low=0.0))
        fix(self, "capacity_gamma", check_float("capacity_gamma", self.capacity_gamma, low=0.0, strict_low=True))
        fix(self, "n_samples", check_int("n_samples", self.n_samples, low=1))
        check_type("group_betas", self.group_betas, Mapping, "a mapping of latent group names to weights")
        fix(
            self,
            "group_betas",
            {str(k): check_float(f"group_betas[{k!r}]", v, low=0.0) for k, v in self.group_betas.items()},
        )
        if self.free_bits > 0 or self.capacity is not None:
            check_single_sample(self.n_samples, "free bits or the capacity objective")
        if self.group_betas and (
            self.n_samples > 1
            or self.capacity is not None
            or (self.free_bits > 0 and self.free_bits_mode != "latent_group")
        ):
            raise ValueError(
                "Expected per-group KL weights with the single-sample β-ELBO (free bits only with "
                f"free_bits_mode='latent_group'), got n_samples={self.n_samples}, capacity={self.capacity}, "
                f"free_bits_mode={self.free_bits_mode!r}"
            )

    def replace(self, **changes: Any) -> ELBOSettings:
        """A new value with ``changes`` applied, checked as a new one is."""
        return dataclasses.replace(self, **changes)

    def values(self) -> tuple[Any, ...]:
        """``(beta, free_bits, free_bits_mode, free_bits_groups, capacity, capacity_gamma)``, as :func:`assemble`
        takes them."""
        return (
            self.beta,
            self.free_bits,
            self.free_bits_mode,
            self.free_bits_groups,
            self.capacity,
            self.capacity_gamma,
        )


class Settings(TypedDict, total=False):
    """The ELBO's settings as keyword arguments of the pure functions (see :func:`elbo_groups`)."""

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
    first = next(iter(z.values()), None)
    k = first.shape[0] if first is not None and first.dim() == 3 else 1
    settings = ELBOSettings(
        beta, free_bits, free_bits_mode, free_bits_groups, capacity, capacity_gamma, k, dict(group_betas or {})
    )
    return elbo_terms(x, posteriors, z, decoder_output, likelihood, priors, settings, report)


def elbo_terms(
    x: Tensor,
    posteriors: Mapping[str, Distribution],
    z: Mapping[str, Tensor],
    decoder_output: Tensor,
    likelihood: Likelihood,
    priors: Mapping[str, Distribution],
    settings: ELBOSettings,
    report: bool,
) -> ELBOTerms:
    """:func:`elbo_groups` with its settings as one checked :class:`ELBOSettings` value (the objectives' form)."""
    names = list(posteriors)
    for name in names:
        if z[name].dim() != 3:
            raise ValueError(f"Expected samples `z` of group {name!r} of shape (k, B, D), got {tuple(z[name].shape)}")
    k = z[names[0]].shape[0]
    if any(z[name].shape[0] != k for name in names):
        raise ValueError(f"Expected the same number of samples in every group, got {[z[n].shape[0] for n in names]}")
    group_betas = settings.group_betas
    values = settings.values()
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
            terms = _weighted_groups(nll, kl, elementwise, names, group_kls, values, report, group_betas)
        else:
            terms = assemble(nll, kl, elementwise, log_ratio, k, values, report, group_kls)
        if report and len(names) > 1:
            with torch.no_grad():
                groups = {n: p[0].mean() for n, p in parts.items()}
                per_dim = {n: None if p[1] is None else kl_per_dim(p[1]) for n, p in parts.items()}
            terms = terms._replace(kl_groups=groups, kl_per_dim_groups=per_dim)
        elif report:
            terms = terms._replace(kl_groups={names[0]: terms.kl}, kl_per_dim_groups={names[0]: terms.kl_per_dim})
    return terms


def pass_terms(
    model: LatentVariableModel, batch: Batch, out: ModelOutput, settings: ELBOSettings, report: bool
) -> ELBOTerms:
    """:func:`elbo_terms` of one pass ``out`` of ``model`` on ``batch`` (what every objective built on the ELBO
    starts from).

    Args:
        model: The model that made the pass (its likelihood scores the data).
        batch: The batch; its data ``x`` are scored.
        out: The model's pass on ``batch``: posteriors, samples, decoder output and priors of every group.
        settings: The ELBO's settings (β, free bits, capacity, importance samples).
        report: Compute the reported values too (see :func:`elbo_groups`).
    """
    inference, generative = out
    return elbo_terms(
        batch.x, inference.posteriors, inference.z, generative.params, model.likelihood, generative.priors,
        settings, report,
    )  # fmt: skip


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
    report = settings.pop("report", True)
    values = ELBOSettings(**settings).values()  # type: ignore[misc]  # the other keys are its fields
    return diagonal_gaussian_terms(x, loc, log_var, decoder_output, likelihood, values, report, group)


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
    """:func:`elbo_diagonal_gaussian` with its settings as :meth:`ELBOSettings.values` (the training step's form:
    checked once where they were set, no keyword packing per step)."""
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
    """The loss and the reported values from ``-log p(x|z)`` ``(k, B)`` or ``(B,)`` and the KL of each example.

    ``settings`` are :meth:`ELBOSettings.values`, checked where they were made.
    """
    beta, free_bits, free_bits_mode, free_bits_groups, capacity, capacity_gamma = settings
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
    settings: tuple[Any, ...],
    report: bool,
    group_betas: Mapping[str, float],
) -> ELBOTerms:
    """``recon + Σ_g β_g · KL_g`` with ``β_g`` from ``group_betas`` (else β), after per-group free bits."""
    beta, free_bits = settings[:2]
    unknown = sorted(set(group_betas) - set(names))
    if unknown:
        raise ValueError(f"Expected `group_betas` to name latent groups of the model {names}, got {unknown}")
    penalties = [g.mean() if free_bits == 0 else g.mean().clamp(min=free_bits) for g in group_kls]
    weighted = sum((group_betas.get(n, beta) * p for n, p in zip(names, penalties)), torch.zeros((), device=nll.device))
    terms = assemble(nll, kl, elementwise, None, 1, ELBOSettings().values(), report)
    penalty = torch.stack(penalties).sum()
    return terms._replace(loss=terms.recon + weighted, kl_penalty=penalty)


def _concat_elementwise(parts: list[Tensor | None]) -> Tensor | None:
    """The elementwise KL of every group side by side, ``(..., B, sum D_g)``, or ``None`` if one does not factorise."""
    if any(part is None for part in parts):
        return None
    tensors = [part for part in parts if part is not None]
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], dim=-1)


class ELBO(Objective, name="elbo"):
    """The ELBO family as an objective: β-ELBO, free bits, the capacity form, and the IWAE bound for k > 1.

    Its settings are one :class:`ELBOSettings` value (:attr:`settings`); the attributes below read it and, when set
    (by an annealing callback between steps), replace it by a checked new value. For a model whose ``fast_path``
    says it is one diagonal-Gaussian group under ``N(0, I)`` (a :class:`~lightning_vae.models.VAEModel` with the
    standard normal prior), one sample and no group weights, :meth:`training_terms` computes the same loss,
    gradients and reported values from the encoder's ``(loc, log_var)`` without building distribution objects.

    Args:
        beta: Weight of the KL term.
        free_bits: λ in nats; 0 disables free bits.
        free_bits_mode: ``"dim"``, ``"group"``, ``"total"`` or ``"latent_group"``.
        free_bits_groups: Number of equal groups of latent dimensions for ``"group"``.
        capacity: Target KL in nats of the capacity form, or ``None``.
        capacity_gamma: γ of the capacity form.
        n_samples: Importance samples k (the IWAE bound above 1).

    Example::

        >>> import torch
        >>> from lightning_vae.models import VAEModel
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> from lightning_vae.data import Batch
        >>> model = VAEModel(MLPEncoder((4,), latent_dim=2), MLPDecoder(2, (4,)))
        >>> objective = ELBO(beta=4.0)
        >>> terms = objective.training_terms(model, Batch(torch.rand(3, 4).round()), report=True, check=True)
        >>> terms.loss.shape, objective.beta
        (torch.Size([]), 4.0)
    """

    weights: ClassVar[tuple[str, ...]] = ("beta", "free_bits", "capacity")

    def __init__(
        self,
        beta: float = 1.0,
        free_bits: float = 0.0,
        free_bits_mode: FreeBitsMode = "dim",
        free_bits_groups: int = 1,
        capacity: float | None = None,
        capacity_gamma: float = 1000.0,
        n_samples: int = 1,
    ) -> None:
        super().__init__()
        self.settings = ELBOSettings(
            beta, free_bits, free_bits_mode, free_bits_groups, capacity, capacity_gamma, n_samples
        )
        self.save_hyperparameters()
        #: Whether the model's encoder returned a distribution (the general path from then on).
        self._distribution_encoder = False

    def extra_repr(self) -> str:
        changed = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)}
        defaults = ELBOSettings()
        return ", ".join(f"{k}={v!r}" for k, v in changed.items() if v != getattr(defaults, k))

    # The settings by name: reading is an attribute lookup, setting makes a new checked value.
    beta = property(lambda self: self.settings.beta, lambda self, v: self._set(beta=v), doc="Weight of the KL term.")
    free_bits = property(lambda self: self.settings.free_bits, lambda self, v: self._set(free_bits=v), doc="λ in nats.")
    free_bits_mode = property(
        lambda self: self.settings.free_bits_mode, lambda self, v: self._set(free_bits_mode=v), doc="Free-bits mode."
    )
    free_bits_groups = property(
        lambda self: self.settings.free_bits_groups, lambda self, v: self._set(free_bits_groups=v), doc="Groups."
    )
    capacity = property(lambda self: self.settings.capacity, lambda self, v: self._set(capacity=v), doc="Target KL C.")
    capacity_gamma = property(
        lambda self: self.settings.capacity_gamma, lambda self, v: self._set(capacity_gamma=v), doc="γ."
    )
    group_betas = property(
        lambda self: dict(self.settings.group_betas),
        lambda self, v: self._set(group_betas=v),
        doc="Weights of chosen latent groups' KL in place of β (set a new dict to change them).",
    )

    @property  # type: ignore[override]
    def n_samples(self) -> int:  # type: ignore[override]
        """Importance samples k of the bound."""
        return self.settings.n_samples

    def _set(self, **changes: Any) -> None:
        self.settings = self.settings.replace(**changes)

    def check_model(self, model: LatentVariableModel) -> None:
        unknown = sorted(set(self.settings.group_betas) - set(model.group_names))
        if unknown:
            raise ValueError(
                f"Expected `group_betas` to name latent groups of the model {list(model.group_names)}, got {unknown}"
            )

    def forward(self, model: LatentVariableModel, batch: Batch, out: ModelOutput, report: bool) -> ELBOTerms:
        return pass_terms(model, batch, out, self.settings, report)

    def training_terms(self, model: LatentVariableModel, batch: Batch, report: bool, check: bool) -> ELBOTerms:
        settings = self.settings
        if not model.fast_path or settings.n_samples != 1 or settings.group_betas or self._distribution_encoder:
            return super().training_terms(model, batch, report, check)
        x = batch.x
        vae: Any = model  # a VAEModel: its fast_path said so
        encoded = vae.encoder(x)
        if type(encoded) is not tuple or len(encoded) != 2:  # a distribution: the general path from now on
            self._distribution_encoder = True
            q = as_posterior(encoded)
            z = q.rsample((1,))
            params = vae.decode(z, x)
            if check:
                model.likelihood.check_params(x, params, sample_dims=1)
            priors = {"z": vae.prior_distribution()}
            return elbo_terms(x, {"z": q}, {"z": z}, params, model.likelihood, priors, settings, report)
        loc, log_var = encoded
        if check and (loc.shape != log_var.shape or loc.dim() < 1):
            as_posterior(encoded)  # raises the posterior's own error
        loc = at_least_float32(loc)
        log_var = clamp_log_var(at_least_float32(log_var))
        # What DiagonalGaussian.rsample((1,)) draws: the same random numbers, so the same step as the general path.
        z = loc + torch.randn_like(loc) * torch.exp(0.5 * log_var)
        params = vae.decoder(z)
        if check:
            model.likelihood.check_params(x, params)
        return diagonal_gaussian_terms(x, loc, log_var, params, model.likelihood, settings.values(), report)

    def state(self) -> dict[str, Any]:
        s = self.settings
        return {"beta": s.beta, "free_bits": s.free_bits, "capacity": s.capacity, "group_betas": dict(s.group_betas)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        known = {k: state[k] for k in ("beta", "free_bits", "capacity", "group_betas") if k in state}
        if known:
            self.settings = self.settings.replace(**known)


class IWAE(ELBO, name="iwae"):
    """The importance-weighted bound (Burda et al. 2015) with ``n_samples`` samples: :class:`ELBO` with k > 1.

    Args:
        n_samples: Importance samples k.
        beta: Weight of ``log p(z) − log q(z|x)`` in the log-weights (1 gives the exact bound).

    Example::

        >>> IWAE(n_samples=5).n_samples
        5
    """

    weights: ClassVar[tuple[str, ...]] = ("beta",)

    def __init__(self, n_samples: int = 5, beta: float = 1.0) -> None:
        super().__init__(beta=beta, n_samples=n_samples)


__all__ = [
    "ELBO",
    "ELBOSettings",
    "IWAE",
    "Settings",
    "elbo",
    "elbo_diagonal_gaussian",
    "elbo_groups",
    "elbo_terms",
    "pass_terms",
]
