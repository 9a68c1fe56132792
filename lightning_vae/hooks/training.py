"""The training step of ``VAE`` (a mixin): the diagonal-Gaussian fast path, the general path, step logging."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from lightning_vae.data.common import unpack_batch
from lightning_vae.distributions.posteriors import IDENTITY_RANGE, LOG_VAR_RANGE, as_posterior, clamp_log_var
from lightning_vae.distributions.priors import StandardNormalPrior
from lightning_vae.functional.math import at_least_float32, soft_clamp
from lightning_vae.guard import DataCheck, NonFiniteGuard
from lightning_vae.models.base import LatentVariableModel
from lightning_vae.models.vae import VAEModel
from lightning_vae.objective import ELBOTerms, FreeBitsMode, elbo_groups
from lightning_vae.objective.elbo import SETTING_NAMES, assemble, diagonal_gaussian_terms
from lightning_vae.utilities import logs_this_step, to_host


class TrainingStep(LightningModule):
    """``training_step`` and ``training_loss`` over the module's objective settings and fault policy."""

    model: LatentVariableModel
    guard: NonFiniteGuard
    data_check: DataCheck
    n_samples: int
    free_bits: float
    free_bits_mode: FreeBitsMode
    free_bits_groups: int
    capacity: float | None
    capacity_gamma: float
    group_betas: dict[str, float]
    _beta: float
    _fast: bool | None
    _shapes_fixed: bool
    compute_terms: Callable[..., tuple[ELBOTerms, Any]]
    _epoch_edge: Callable[[int], bool]

    def training_loss(self, batch: Any) -> Tensor:
        """The loss :meth:`training_step` minimises on ``batch``, without logging (for extra inner updates)."""
        return self.compute_terms(unpack_batch(batch))[0].loss

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor] | None:
        """Minimise the loss; return ``{"loss", "kl"}`` (the raw KL of the step, detached, for callbacks).

        Returns ``None`` (Lightning then skips the backward pass and the optimizer step) for a non-finite step
        under ``on_nonfinite="skip"``.
        """
        x = unpack_batch(batch)
        trainer = self._trainer
        logs = trainer is None or logs_this_step(trainer) or self._epoch_edge(batch_idx)
        if (
            not logs
            and self._fast
            and self.n_samples == 1
            and self.free_bits == 0
            and self.capacity is None
            and not self.group_betas
            and self.guard.policy == "raise"
            and not self.guard.deferred
            and x.is_cpu
            and not torch.is_autocast_enabled("cpu")
            and self.data_check.skip()  # last: counts the batch only when the common step takes it
        ):
            return self._common_step(x, batch_idx)
        return self._finish(x, batch_idx, logs, self._training_terms(x, lambda: self._where(batch_idx), logs))

    def _common_step(self, x: Tensor, batch_idx: int) -> dict[str, Tensor] | None:
        """The step that most steps of a CPU run are, in one function (each call and lookup costs here).

        A :class:`~lightning_vae.models.VAEModel` with the standard normal prior, one sample, no free bits,
        capacity or group weights, a step that is not logged, no data check due, the guard reading the loss on
        the spot, no autocast: the loss of :func:`diagonal_gaussian_terms` from the same random numbers, with no
        other term computed unless the loss is not finite. Anything else the encoder returns goes to the general
        step.
        """
        # The model's current networks, read without nn.Module.__getattr__.
        parts: dict[str, Any] = self._modules["model"]._modules  # type: ignore[union-attr, assignment]
        encoded = parts["encoder"](x)
        if not (
            type(encoded) is tuple
            and len(encoded) == 2
            and encoded[0].dtype is torch.float32
            and encoded[1].dtype is torch.float32
        ):  # a distribution or narrower heads: the fast path's handling
            model = cast(VAEModel, self.model)
            return self._finish(x, batch_idx, False, self._fast_terms(x, model, encoded, False, False))
        loc, log_var = encoded
        # clamp_log_var and gaussian_kl written out: calling the two helpers here costs ~30 µs per step at batch 128
        # (paired steps, 1 thread); tests/test_training_step.py holds both to the general path on either side of
        # the clamp's identity range.
        low, high = torch.aminmax(log_var.detach())
        if not (IDENTITY_RANGE[0] <= low.item() and high.item() <= IDENTITY_RANGE[1]):
            log_var = soft_clamp(log_var, *LOG_VAR_RANGE)
        z = loc + torch.randn_like(loc) * torch.exp(0.5 * log_var)
        nll = parts["likelihood"].nll(x, parts["decoder"](z))
        elementwise = torch.addcmul(0.5 * (torch.expm1(log_var) - log_var), loc, loc, value=0.5)
        kl = elementwise.sum(-1)
        beta = self._beta
        loss = (nll + kl).mean() if beta == 1.0 else (nll + beta * kl).mean()
        if math.isfinite(loss.item()):  # the guard's read under "raise" (a Python float on the CPU)
            return {"loss": loss, "kl": kl.detach().mean()}
        terms = assemble(nll, kl, elementwise, None, 1, self._setting_values(), False)
        return self._finish(x, batch_idx, False, terms)

    def _finish(self, x: Tensor, batch_idx: int, logs: bool, terms: ELBOTerms) -> dict[str, Tensor] | None:
        """The guard's check of the step's terms, the step's logging and its outputs."""
        trainer = self._trainer
        step, epoch = (trainer.global_step, trainer.current_epoch) if trainer is not None else (0, 0)
        if self.guard.observe(self, x, terms, step=step, batch_idx=batch_idx, epoch=epoch):
            return None
        if logs:
            self._log_step(terms, x.shape[0])
        return {"loss": terms.loss, "kl": terms.kl.detach()}

    def _where(self, batch_idx: int) -> str:
        """The training step in words, for error messages."""
        trainer = self._trainer
        step, epoch = (trainer.global_step, trainer.current_epoch) if trainer is not None else (0, 0)
        return f"training: global step {step}, epoch {epoch}, batch {batch_idx}"

    def _training_terms(self, x: Tensor, where: Callable[[], str], report: bool) -> ELBOTerms:
        """The training step's terms: the diagonal-Gaussian fast path where it applies, else :meth:`compute_terms`.

        The fast path (a :class:`~lightning_vae.models.VAEModel` whose encoder returns ``(loc, log_var)``, a
        standard normal prior, a non-autoregressive decoder, one sample) computes the same loss, gradients and
        reported values from the same random numbers without building distribution objects (to float32 rounding
        where :func:`~lightning_vae.distributions.posteriors.clamp_log_var` skips the clamp).
        """
        if self._fast is None:
            model = self.model
            self._fast = type(model) is VAEModel and type(model.prior) is StandardNormalPrior
            self._fast = self._fast and not model.autoregressive
        if not self._fast or self.n_samples != 1 or self.group_betas:
            return self.compute_terms(x, where=where, report=report)[0]
        model = cast(VAEModel, self.model)
        due = self.data_check(model.likelihood, x, self.guard.policy, where)
        if not self._shapes_fixed:
            model.fix_shapes(x)
            self._shapes_fixed = True
        return self._fast_terms(x, model, model.encoder(x), due, report)

    def _fast_terms(self, x: Tensor, model: VAEModel, encoded: Any, due: bool, report: bool) -> ELBOTerms:
        """The fast path's terms from the encoder's output (the general path for a distribution)."""
        if type(encoded) is not tuple or len(encoded) != 2:  # a distribution: the general path from now on
            self._fast = False
            q = as_posterior(encoded)
            z = q.rsample((1,))
            params = model.decode(z, x)
            model.likelihood.check_params(x, params, sample_dims=1)
            priors = {"z": model.prior_distribution()}
            return elbo_groups(x, {"z": q}, {"z": z}, params, model.likelihood, priors, **self._settings(report))
        loc, log_var = encoded
        if due and (loc.shape != log_var.shape or loc.dim() < 1):
            as_posterior(encoded)  # raises the posterior's own error
        loc = at_least_float32(loc)
        log_var = clamp_log_var(at_least_float32(log_var))
        # What DiagonalGaussian.rsample((1,)) draws: the same random numbers, so the same step.
        z = loc + torch.randn_like(loc) * torch.exp(0.5 * log_var)
        params = model.decoder(z)
        if due:
            model.likelihood.check_params(x, params)
        return diagonal_gaussian_terms(x, loc, log_var, params, model.likelihood, self._setting_values(), report)

    def _setting_values(self) -> tuple[Any, ...]:
        """The objective's settings in the order of :data:`~lightning_vae.objective.elbo.SETTING_NAMES`."""
        return (
            self._beta,
            self.free_bits,
            self.free_bits_mode,
            self.free_bits_groups,
            self.capacity,
            self.capacity_gamma,
        )

    def _settings(self, report: bool) -> dict[str, Any]:
        """The same settings as keywords of :func:`~lightning_vae.objective.elbo_groups`."""
        return {**dict(zip(SETTING_NAMES, self._setting_values())), "report": report}

    def _log_step(self, terms: ELBOTerms, batch_size: int) -> None:
        assert terms.elbo is not None  # computed on logging steps
        values = {"train/loss": terms.loss, "train/elbo": terms.elbo, "train/recon": terms.recon, "train/kl": terms.kl}
        if terms.iwae is not None:
            values["train/iwae"] = terms.iwae
        if terms.kl_groups is not None and len(terms.kl_groups) > 1:
            values.update({f"train/kl/{name}": kl for name, kl in terms.kl_groups.items()})
        # One device-to-host copy for the step's values and the guard's kept losses (the loggers and the progress
        # bar then read host tensors); Python numbers as host tensors (Lightning would copy them to the device).
        host, finite = to_host(values, self.guard.pending_finite())
        self.guard.flush(self, finite)
        host.update({"train/beta": torch.tensor(self.beta), "train/free_bits": torch.tensor(self.free_bits)})
        self.log("train/loss", host.pop("train/loss"), prog_bar=True, batch_size=batch_size)
        self.log_dict(host, batch_size=batch_size)


__all__ = ["TrainingStep"]
