"""The latent-variable model interface: one inference path, one generative path, named latent groups.

A model is a plain ``nn.Module`` (no Lightning in it). Its latent state is an ordered collection of named
*groups* (one group ``"z"`` for a VAE, several for a hierarchical model, top group first):

- :meth:`LatentVariableModel.inference` maps data ``x`` to the posterior of every group and ``k`` reparameterised
  samples of each, ``z[name]`` of shape ``(k, B, D_name)``;
- :meth:`LatentVariableModel.generative` maps samples of every group (and, for an autoregressive decoder, the
  data) to the likelihood's parameters ``(k, B, *param_shape)`` and the prior of every group (for a lower group
  of a hierarchical model, conditioned on the samples above it);
- everything else (``log_joint``, ``sample``, ``reconstruct``, ``forward``) is built on those two, once, here.

A *conditional* model (``conditional = True``) also takes a ``context`` (class labels, conditioning features) in
both paths: ``inference(x, k, context=c)`` and ``generative(z, x, context=c)``; every method here passes the
context on. An unconditional model never receives one, so its two paths keep their two arguments.

The objective (:class:`lightning_vae.objective.Objective`), the metrics, the collapse monitor and the views
iterate over the groups; see ``docs/architecture.md``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.posteriors import DiagonalGaussian
from lightning_vae.functional.math import at_least_float32


def as_model_input(module: nn.Module, t: Tensor) -> Tensor:
    """Floating ``t`` in the floating type of ``module``'s parameters; anything else as it is.

    What Lightning's precision plugin does to the training batches, for the tensors a view, a metric or a user hands
    the model directly (float32 images for a ``precision="64-true"`` model).

    Example::

        >>> as_model_input(nn.Linear(2, 2).double(), torch.zeros(1, 2)).dtype
        torch.float64
    """
    param = next(iter(module.parameters()), None)
    if param is not None and param.is_floating_point() and t.is_floating_point() and t.dtype != param.dtype:
        return t.to(param.dtype)
    return t


class Inference(NamedTuple):
    """What the inference path returns.

    Attributes:
        posteriors: ``q(z_g | x, ...)`` for each group ``g``, event shape ``(D_g,)`` and batch shape ``(B,)``
            (or ``(k, B)`` when it depends on samples of another group).
        z: ``k`` samples of each group, ``(k, B, D_g)``.
    """

    posteriors: dict[str, Distribution]
    z: dict[str, Tensor]


class Generative(NamedTuple):
    """What the generative path returns.

    Attributes:
        params: The likelihood's parameters for every sample, ``(k, B, *param_shape)``.
        priors: ``p(z_g | z_>g)`` for each group, event shape ``(D_g,)``; a lower group's batch shape is
            that of the samples it is conditioned on.
    """

    params: Tensor
    priors: dict[str, Distribution]


class ModelOutput(NamedTuple):
    """One pass of inference and generation (what ``forward`` returns)."""

    inference: Inference
    generative: Generative


class LatentVariableModel(nn.Module, ABC):
    """A latent-variable model ``p(x | z) p(z)`` with an amortised posterior ``q(z | x)`` over named groups.

    Subclasses implement :meth:`inference`, :meth:`generative` and :meth:`prior_sample`, and set
    :attr:`likelihood` (a :class:`~lightning_vae.distributions.Likelihood`), :attr:`data_shape` (the shape of
    one example, or ``None`` until :meth:`fix_shapes` sees data) and :attr:`group_names`.

    Attributes:
        conditional: Whether the model takes a ``context`` beside ``x`` (its paths then accept ``context=``).
        fast_path: Whether the model is one diagonal-Gaussian group under ``N(0, I)`` with an ``encoder`` returning
            ``(loc, log_var)`` and a non-autoregressive ``decoder``: the ELBO then computes its terms from those
            parameters without building distribution objects (:class:`lightning_vae.objective.ELBO`).
    """

    likelihood: Likelihood
    data_shape: tuple[int, ...] | None
    group_names: tuple[str, ...]
    conditional: bool = False

    @property
    def fast_path(self) -> bool:
        """See the class attributes; ``False`` unless a model says otherwise."""
        return False

    @abstractmethod
    def inference(self, x: Tensor, n_samples: int = 1) -> Inference:
        """The posterior of every group given ``x`` and ``n_samples`` reparameterised samples of each."""

    @abstractmethod
    def generative(self, z: Mapping[str, Tensor], x: Tensor | None = None) -> Generative:
        """The likelihood's parameters and the priors for samples ``z[g]`` of shape ``(k, B, D_g)``."""

    @abstractmethod
    def prior_sample(self, n: int) -> dict[str, Tensor]:
        """``n`` ancestral samples of every group from the prior, ``(1, n, D_g)`` each."""

    def fix_shapes(self, x: Tensor | None = None) -> None:
        """Fix the sizes the model could not know at construction from one batch ``x`` (idempotent).

        The base class records :attr:`data_shape`; subclasses also fix latent sizes. Called once by the
        training module before the first step, and by :meth:`sample` (which then needs ``data_shape``).
        """
        if self.data_shape is None and x is not None:
            self.data_shape = tuple(int(d) for d in x.shape[1:])

    def _context(self, context: Tensor | None) -> dict[str, Tensor]:
        """The keyword a conditional model's paths take (none for an unconditional model)."""
        if context is None:
            if self.conditional:
                raise ValueError(f"{type(self).__name__} is conditional: pass a `context` (e.g. the batch's labels)")
            return {}
        if not self.conditional:
            raise ValueError(f"{type(self).__name__} is not conditional: it takes no `context`")
        return {"context": context}

    def forward(self, x: Tensor, n_samples: int = 1, context: Tensor | None = None) -> ModelOutput:
        """Infer ``n_samples`` samples of every group for ``x`` (given ``context``) and generate from them."""
        ctx = self._context(context)
        inference = self.inference(x, n_samples, **ctx)
        return ModelOutput(inference, self.generative(inference.z, x, **ctx))

    def log_joint(self, x: Tensor, z: Tensor | Mapping[str, Tensor], context: Tensor | None = None) -> Tensor:
        """``log p(x, z) = log p(x | z) + sum_g log p(z_g | z_>g)`` in nats, shape ``(S, B)``.

        ``z`` maps each group to samples ``(S, B, D_g)``; a single tensor is the only group's samples. A conditional
        model gives ``log p(x, z | context)``.
        """
        groups = self._as_groups(z)
        out = self.generative(groups, x, **self._context(context))
        log_p = self.likelihood.log_prob(x, out.params)
        for name, prior in out.priors.items():
            log_p = log_p + at_least_float32(prior.log_prob(at_least_float32(groups[name])))
        return log_p

    def log_weights(self, x: Tensor, n_samples: int, context: Tensor | None = None) -> Tensor:
        """Importance log-weights ``log p(x, z) - log q(z | x)`` over every group, ``(n_samples, B)``.

        Each group is drawn from its posterior (given the samples it depends on) and scored by its own log-density;
        ``logsumexp`` over the samples minus ``log n_samples`` is the IWAE estimate of ``log p(x)``.
        """
        ctx = self._context(context)
        inference = self.inference(x, n_samples, **ctx)
        out = self.generative(inference.z, x, **ctx)
        log_w = self.likelihood.log_prob(x, out.params)
        for name, q in inference.posteriors.items():
            z = inference.z[name]
            log_w = log_w + at_least_float32(out.priors[name].log_prob(z)) - at_least_float32(q.log_prob(z))
        return log_w

    def encode(self, x: Tensor, context: Tensor | None = None) -> Distribution:
        """``q(z|x)`` of the first group (the only group of a single-group model)."""
        return self.inference(x, 1, **self._context(context)).posteriors[self.group_names[0]]

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, context: Tensor | None = None) -> Tensor:
        """Draw ``n`` examples: latents from the prior, then the likelihood's mean (or a sample of ``x``).

        A conditional model draws from ``p(x | z, context)``, ``context`` of batch size ``n``.
        """
        params = self.generative(self.prior_sample(n), **self._context(context)).params[0]
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Decode the posterior means of ``x`` and return the likelihood's mean, in data space."""
        ctx = self._context(context)
        inference = self.inference(x, 1, **ctx)
        means = {name: q.mean.expand_as(inference.z[name]) for name, q in inference.posteriors.items()}
        return self.likelihood.mean(self.generative(means, x, **ctx).params[0])

    def _as_groups(self, z: Tensor | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        if isinstance(z, Tensor):
            if len(self.group_names) != 1:
                raise ValueError(
                    f"Expected `z` to map each latent group {self.group_names} to its samples, got one tensor"
                )
            return {self.group_names[0]: z}
        missing = [name for name in self.group_names if name not in z]
        if missing:
            raise ValueError(
                f"Expected `z` to hold samples of every latent group {self.group_names}, missing {missing}"
            )
        return z


def per_example(posterior: Distribution, batch: int) -> Distribution | None:
    """A group's posterior as one distribution per example, batch shape ``(B,)``, for the monitors.

    A group conditioned on one sample of another group has batch shape ``(1, B)``: a diagonal Gaussian is then
    taken at that sample (``q(z_g | x, z_other)``); ``None`` for another distribution with a sample dimension
    (the monitors then use the samples alone).

    Example::

        >>> import torch
        >>> q = DiagonalGaussian(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
        >>> per_example(q, 3).batch_shape
        torch.Size([3])
    """
    if tuple(posterior.batch_shape) == (batch,):
        return posterior
    if isinstance(posterior, DiagonalGaussian) and tuple(posterior.batch_shape) == (1, batch):
        return DiagonalGaussian.from_clamped(posterior.loc[0], posterior.log_var[0])
    return None


__all__ = ["Generative", "Inference", "LatentVariableModel", "ModelOutput", "per_example"]
