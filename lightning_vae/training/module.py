"""``VAE``: the LightningModule that trains a latent-variable model with an objective.

The model (inference and generative paths, :mod:`lightning_vae.models`) is a plain ``nn.Module`` held as
``VAE.model``; the objective (:mod:`lightning_vae.objective`) turns a pass of it into the loss and named terms. This
module keeps the steps, the evaluation metrics (:mod:`lightning_vae.training.metrics`), the logging, the optimizers
and the fault policy (:mod:`lightning_vae.training.faults`); checkpoint files are read and written by
:mod:`lightning_vae.checkpoints`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.adapters import is_compiled, retire_step_logs
from lightning_vae.building import build, check_checkpoint_classes, save_hparams
from lightning_vae.checkpoints import load_checkpoint, migrate_state_dict, use_safe_checkpoint_io
from lightning_vae.checks import check_choice, check_float, check_int, check_type
from lightning_vae.data.common import Batch, read_batch
from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.priors import Prior
from lightning_vae.functional.nll import IW_CHUNK_SIZE, iw_nll
from lightning_vae.models.base import LatentVariableModel, ModelOutput, as_model_input, per_example
from lightning_vae.models.vae import LikelihoodName, PriorName, VAEModel
from lightning_vae.objective import ELBO, ELBOTerms, FreeBitsMode, Objective, RunFacts, make_objective, model_pass
from lightning_vae.training.faults import (
    DataCheck,
    NonFiniteError,
    NonFiniteGuard,
    NonFinitePolicy,
    agree_over_ranks,
    refuse_sharding,
)
from lightning_vae.training.metrics import EvalMetrics, Stage
from lightning_vae.utilities import logs_this_step, to_host


class VAEOutput(NamedTuple):
    """What :meth:`VAE.forward` returns: the first latent group's view of one pass, and the whole pass.

    Attributes:
        posterior: q(z|x) of the first group, batch shape ``(B,)``, event shape ``(D,)``.
        z: Its samples, ``(k, B, D)``.
        decoder_output: Likelihood parameters for each sample, ``(k, B, *param_shape)``.
        prior: Its prior, event shape ``(D,)``.
        groups: The whole pass (every group's posterior, samples and prior).
    """

    posterior: Distribution
    z: Tensor
    decoder_output: Tensor
    prior: Distribution
    groups: ModelOutput


def _objective_value(name: str, doc: str) -> Any:
    """A module attribute that reads and sets the objective's attribute ``name`` (an annealable weight)."""

    def get(self: VAE) -> Any:
        return getattr(self.objective, name)

    def set_(self: VAE, value: Any) -> None:
        if not hasattr(self.objective, name):
            raise AttributeError(f"The objective {type(self.objective).__name__} has no `{name}` to set")
        setattr(self.objective, name, value)

    return property(get, set_, doc=doc)


#: The ELBO arguments of ``VAE`` and their defaults: given with another objective, they would be ignored.
_ELBO_DEFAULTS = {
    "beta": 1.0,
    "free_bits": 0.0,
    "free_bits_mode": "dim",
    "free_bits_groups": 1,
    "capacity": None,
    "capacity_gamma": 1000.0,
    "n_samples": 1,
}


class VAE(LightningModule):
    """A variational autoencoder around any encoder and decoder, or any latent-variable model.

    ``VAE(encoder, decoder, likelihood=..., prior=...)`` builds the single-group
    :class:`~lightning_vae.models.VAEModel`; ``VAE(model=...)`` trains any
    :class:`~lightning_vae.models.LatentVariableModel` (hierarchical models, flow posteriors, conditional models).
    The loss is the module's :attr:`objective`: by default the β-ELBO with optional free bits, the capacity
    objective, or the IWAE bound (``n_samples > 1``), built from the arguments below
    (:class:`~lightning_vae.objective.ELBO`); any :class:`~lightning_vae.objective.Objective` by name or as an
    object. Every logged value is in nats per example. Training logs
    ``train/loss``, ``train/elbo``, ``train/recon``, ``train/kl``, ``train/beta`` and ``train/free_bits`` on the
    steps whose values reach the loggers and on the first and last batch of each epoch; validation and test log
    ``val/...`` and ``test/...`` epoch means through torchmetrics, identical under DDP.

    The annealing protocol: callbacks may set the objective's declared weights (:attr:`beta`, :attr:`free_bits`
    and :attr:`capacity` of the ELBO, read and set through the module) between steps. Batches are read by
    :meth:`read_batch` (data and context; override it for another batch layout). Data are checked against the
    likelihood (finite, within its range) on every batch on the CPU, and on accelerators on the first 10 batches
    and every 25th after (:class:`~lightning_vae.training.faults.DataCheck`).

    Args:
        encoder: Network ``x -> (loc, log_var)`` (or a distribution with event shape ``(D,)``).
        decoder: Network ``z -> likelihood parameters``.
        likelihood: ``"bernoulli"``, ``"gaussian"`` (σ = 1), ``"gaussian_learned"``, ``"gaussian_per_dim"``,
            ``"laplace"``, ``"categorical"``, ``"logistic_mixture"`` or a
            :class:`~lightning_vae.distributions.Likelihood`.
        prior: ``"standard_normal"``, ``"learnable"``, ``"mixture"``, ``"vamp"`` or a
            :class:`~lightning_vae.distributions.Prior`.
        beta: Weight of the KL term, >= 0.
        free_bits: λ in nats (Kingma et al. 2016); 0 disables free bits.
        free_bits_mode: ``"dim"`` (each latent dimension), ``"group"`` or ``"total"``.
        free_bits_groups: Number of equal groups of latent dimensions for ``free_bits_mode="group"``.
        n_samples: Importance samples k of the training bound; above 1 the loss is the IWAE bound.
        n_eval_samples: Importance samples for ``val/nll_iw`` and ``test/nll_iw``; 0 skips them.
        capacity: Target KL in nats for the capacity objective ``recon + γ|KL - C|``, or ``None``.
        capacity_gamma: γ of the capacity objective.
        latent_dim: Size of z when the encoder has no ``latent_dim`` attribute.
        data_shape: Shape of one example when the encoder has no ``input_shape`` attribute.
        prior_components: Components of the mixture prior or pseudo-inputs of the VampPrior.
        optimizer: Callable that builds the optimiser from the parameters (default Adam, lr 1e-3).
        lr_scheduler: Optional callable that builds a scheduler from the optimiser.
        compile: Compile the model's networks with ``torch.compile`` in :meth:`configure_model` (in place:
            parameter names stay those of the uncompiled networks); a dict gives ``torch.compile``'s arguments.
        on_nonfinite: ``"raise"`` stops the run at a NaN/inf loss naming step, batch and term; ``"skip"`` skips
            such steps (no parameter or optimizer-state change), at most ``max_nonfinite_skips`` in a row. See
            :mod:`lightning_vae.training.faults`.
        max_nonfinite_skips: With ``on_nonfinite="skip"``, the most non-finite steps in a row.
        divergence_ratio: Stop with a :class:`~lightning_vae.training.faults.DivergenceError` when a finite training
            loss exceeds this many times the run's scale (the absolute loss of its first step, at least 1 nat);
            ``None`` turns the check off.
        iw_chunk_size: Most (sample, example) pairs decoded at once for the importance-weighted NLL.
        model: A :class:`~lightning_vae.models.LatentVariableModel` to train instead of building one from
            ``encoder`` and ``decoder`` (then leave those and the other model arguments out).
        objective: The objective: ``None`` or ``"elbo"`` builds :class:`~lightning_vae.objective.ELBO` from
            ``beta``, ``free_bits``, ``free_bits_mode``, ``free_bits_groups``, ``capacity``, ``capacity_gamma``
            and ``n_samples``; another name (``"iwae"``, or a registered objective's) or an
            :class:`~lightning_vae.objective.Objective` is used as it is (then leave those arguments at their
            defaults).

    Example::

        >>> import torch
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> vae = VAE(MLPEncoder((1, 28, 28), latent_dim=8), MLPDecoder(8, (1, 28, 28)), likelihood="bernoulli")
        >>> out = vae(torch.rand(4, 1, 28, 28))
        >>> out.z.shape, vae.sample(3).shape
        (torch.Size([1, 4, 8]), torch.Size([3, 1, 28, 28]))
    """

    def __init__(
        self,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        likelihood: LikelihoodName | Likelihood = "bernoulli",
        prior: PriorName | Prior = "standard_normal",
        beta: float = 1.0,
        free_bits: float = 0.0,
        free_bits_mode: FreeBitsMode = "dim",
        free_bits_groups: int = 1,
        n_samples: int = 1,
        n_eval_samples: int = 0,
        capacity: float | None = None,
        capacity_gamma: float = 1000.0,
        latent_dim: int | None = None,
        data_shape: Sequence[int] | None = None,
        prior_components: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        compile: bool | dict[str, Any] = False,
        on_nonfinite: NonFinitePolicy = "raise",
        max_nonfinite_skips: int = 10,
        divergence_ratio: float | None = 1e4,
        iw_chunk_size: int = IW_CHUNK_SIZE,
        model: LatentVariableModel | None = None,
        objective: str | Objective | None = None,
    ) -> None:
        super().__init__()
        given = {"encoder": build(encoder, "encoder"), "decoder": build(decoder, "decoder")}
        given.update(likelihood=build(likelihood, "likelihood"), prior=build(prior, "prior"))
        model = build(model, "network")  # an nn.Module (a config's "model" slot is the LightningModule)
        objective = build(objective, "objective")
        elbo_args = {
            "beta": beta,
            "free_bits": free_bits,
            "free_bits_mode": free_bits_mode,
            "free_bits_groups": free_bits_groups,
            "capacity": capacity,
            "capacity_gamma": capacity_gamma,
            "n_samples": n_samples,
        }
        self.objective = self._make_objective(objective, elbo_args)
        self.n_eval_samples = check_int("n_eval_samples", n_eval_samples, low=0)
        check_choice("on_nonfinite", on_nonfinite, NonFinitePolicy)
        ratio = None if divergence_ratio is None else check_float("divergence_ratio", divergence_ratio, low=1.0)
        self.guard = NonFiniteGuard(
            on_nonfinite, check_int("max_nonfinite_skips", max_nonfinite_skips, low=1), divergence_ratio=ratio
        )
        self.iw_chunk_size = check_int("iw_chunk_size", iw_chunk_size, low=1)
        if not isinstance(compile, (bool, Mapping)):
            raise TypeError(f"Expected `compile` to be a bool or a dict of torch.compile arguments, got {compile!r}")
        #: torch.compile's arguments, or None: no compilation (see configure_model).
        self._compile: dict[str, Any] | None = dict(compile) if isinstance(compile, Mapping) else None
        if compile is True:
            self._compile = {}
        self.model = self._make_model(model, given, latent_dim, data_shape, prior_components)
        self.objective.check_model(self.model)
        # An objective with optimizers of its own steps them itself (Lightning's manual optimization).
        self.automatic_optimization = not self.objective.manual_optimization
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.eval_metrics = EvalMetrics(self.model.group_names)
        self.data_check = DataCheck()
        self._shapes_fixed = False
        #: The last step logged values: the next step marks them read (see ``adapters.retire_step_logs``).
        self._step_logged = False
        frame = inspect.currentframe()
        described = {**given, "model": model, "objective": objective}
        save_hparams(self, frame, described, {"optimizer": optimizer, "lr_scheduler": lr_scheduler})

    @staticmethod
    def _make_objective(objective: Any, elbo_args: dict[str, Any]) -> Objective:
        if objective is None or objective == "elbo":
            return ELBO(**elbo_args)
        changed = sorted(k for k, v in elbo_args.items() if v != _ELBO_DEFAULTS[k])
        if changed:
            raise ValueError(
                f"Expected the ELBO's arguments {changed} only with objective=None or 'elbo', got objective="
                f"{objective!r}: pass them to the objective itself"
            )
        return make_objective(objective)

    @staticmethod
    def _make_model(
        model: Any, given: dict[str, Any], latent_dim: Any, data_shape: Any, components: int
    ) -> LatentVariableModel:
        if model is not None:
            check_type("model", model, LatentVariableModel, "a lightning_vae.models.LatentVariableModel")
            extra = [n for n in ("encoder", "decoder") if given[n] is not None]
            extra += [n for n, v in (("latent_dim", latent_dim), ("data_shape", data_shape)) if v is not None]
            extra += [n for n, d in (("likelihood", "bernoulli"), ("prior", "standard_normal")) if given[n] != d]
            if extra:
                raise ValueError(
                    f"Expected `model` alone, got it together with {extra}: the model holds its networks, sizes, "
                    "likelihood and prior"
                )
            return model  # type: ignore[no-any-return]
        missing = [n for n in ("encoder", "decoder") if given[n] is None]
        if missing:
            raise ValueError(
                f"VAE needs an {' and '.join(missing)} (or a `model`). When loading a checkpoint of networks that "
                "do not record their arguments, pass them again: VAE.load_from_checkpoint(path, encoder=..., "
                "decoder=...)"
            )
        return VAEModel(**given, latent_dim=latent_dim, data_shape=data_shape, prior_components=components)

    # ------------------------------------------------------------------ the objective's weights (annealing protocol)
    beta = _objective_value("beta", "Weight of the KL term; callbacks may set it between steps (any value >= 0).")
    free_bits = _objective_value("free_bits", "Free bits λ in nats.")
    free_bits_mode = _objective_value("free_bits_mode", "Free-bits mode.")
    free_bits_groups = _objective_value("free_bits_groups", "Equal groups of latent dimensions for free bits.")
    capacity = _objective_value("capacity", "Target KL C of the capacity form, or None.")
    capacity_gamma = _objective_value("capacity_gamma", "γ of the capacity form.")
    group_betas = _objective_value("group_betas", "Weights of chosen latent groups' KL in place of β.")

    @property
    def n_samples(self) -> int:
        """Samples of every latent group per example the objective draws in training."""
        return self.objective.n_samples

    # ------------------------------------------------------------------ the model's parts, read through
    @property
    def encoder(self) -> nn.Module:
        """The model's encoder (a single-group model's; other models may not have one)."""
        return self._part("encoder")  # type: ignore[no-any-return]

    @property
    def decoder(self) -> nn.Module:
        """The model's decoder."""
        return self._part("decoder")  # type: ignore[no-any-return]

    @property
    def likelihood(self) -> Likelihood:
        """The model's likelihood ``p(x | z)``."""
        return self.model.likelihood

    @property
    def prior(self) -> Prior:
        """The model's prior module (a single-group model's)."""
        return self._part("prior")  # type: ignore[no-any-return]

    @property
    def data_shape(self) -> tuple[int, ...] | None:
        """The shape of one example, or ``None`` until known."""
        return self.model.data_shape

    @property
    def autoregressive(self) -> bool:
        """Whether the decoder takes ``(z, x)`` (a PixelCNN decoder)."""
        return bool(getattr(self.model, "autoregressive", False))

    def _part(self, name: str) -> Any:
        part = getattr(self.model, name, None)
        if part is None:
            raise AttributeError(f"{type(self.model).__name__} has no `{name}`: use vae.model and its latent groups")
        return part

    def _input(self, t: Tensor | None) -> Any:
        """A floating input in the model's floating type (see :func:`~lightning_vae.models.base.as_model_input`)."""
        return None if t is None else as_model_input(self.model, t)

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """The likelihood's parameters for latents ``z`` of shape ``(..., D)`` (a single-group model's decoder)."""
        return self._part("decode")(self._input(z), self._input(x))  # type: ignore[no-any-return]

    def prior_distribution(self) -> Distribution:
        """``p(z)`` with event shape ``(D,)`` (a single-group model's prior)."""
        return self._part("prior_distribution")()  # type: ignore[no-any-return]

    def encode(self, x: Tensor, context: Tensor | None = None) -> Distribution:
        """q(z|x) of the model's first latent group (given ``context`` for a conditional model)."""
        return self.model.encode(self._input(x), **_context(context))

    def log_joint(self, x: Tensor, z: Tensor | Mapping[str, Tensor], context: Tensor | None = None) -> Tensor:
        """``log p(x, z)`` in nats, shape ``(S, B)`` (the importance-weighted NLL's protocol, with :meth:`encode`)."""
        z = self._input(z) if isinstance(z, Tensor) else {name: self._input(v) for name, v in z.items()}
        return self.model.log_joint(self._input(x), z, **_context(context))

    def log_weights(self, x: Tensor, n_samples: int, context: Tensor | None = None) -> Tensor:
        """Importance log-weights over every latent group, ``(n_samples, B)`` (what the IW-NLL averages)."""
        return self.model.log_weights(self._input(x), n_samples, **_context(context))

    def sample(self, n: int, mean: bool = True, context: Tensor | None = None) -> Tensor:
        """Draw ``n`` examples from the model (the likelihood's mean, or a sample of ``x``)."""
        return self.model.sample(n, mean, **_context(context))

    def reconstruct(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The reconstruction of ``x`` in data space."""
        return self.model.reconstruct(self._input(x), **_context(context))

    def forward(self, x: Tensor, n_samples: int = 1, context: Tensor | None = None) -> VAEOutput:
        """One pass of the model: infer ``n_samples`` samples of every latent group, generate from them."""
        out = model_pass(self.model, Batch(x, context), n_samples)
        first = self.model.group_names[0]
        posterior, z = out.inference.posteriors[first], out.inference.z[first]
        return VAEOutput(posterior, z, out.generative.params, out.generative.priors[first], out)

    # ------------------------------------------------------------------ batches and the objective
    def read_batch(self, batch: Any) -> Batch:
        """The data and context of a batch (:func:`lightning_vae.data.read_batch`).

        The one place batches are read: the steps, the callbacks and the metrics all go through it. Override it
        for another batch layout, e.g. ``return Batch(batch["pixels"], batch.get("digit"))``.
        """
        return read_batch(batch)

    def _prepare(self, x: Tensor, where: Callable[[], str] | None) -> bool:
        """Check the data when due and fix the model's sizes once; return whether the data were checked."""
        due = self.data_check(self.model.likelihood, x, self.guard.policy, where)
        self._fix_shapes(x)
        return due

    def _fix_shapes(self, x: Tensor) -> None:
        if not self._shapes_fixed:  # once: sizes the model could not know at construction
            self.model.fix_shapes(x)
            self._shapes_fixed = True

    def _training_terms(self, data: Batch, report: bool, where: Callable[[], str] | None) -> ELBOTerms:
        """The objective's training terms, the data checked when due.

        The check runs after the forward pass, while the batch is still in the cache (the loss read it last; before
        the pass it is usually not, and the check then costs several times more), and before any backward pass or
        optimizer step, so bad data never updates the model. A forward pass that fails (e.g. an index out of a
        categorical likelihood's range, or a user's encoder whose ``torch.distributions`` object refuses NaN
        parameters) has its data checked whatever the schedule: bad data are reported as such, and NaN/inf data
        under ``on_nonfinite="skip"`` make the step a non-finite one, which the guard drops like any other.
        """
        x = data.x
        due = self.data_check.due(x)
        self._fix_shapes(x)
        try:
            terms = self.objective.training_terms(self.model, data, report, due)
        except Exception:
            finite = self.data_check.check(self.model.likelihood, x, self.guard.policy, where)
            if not finite and self.automatic_optimization:
                return self._dropped_terms()
            raise
        if due:
            self.data_check.check(self.model.likelihood, x, self.guard.policy, where)
        return terms

    def _dropped_terms(self) -> ELBOTerms:
        """The terms of a step whose forward pass could not run on non-finite data: a NaN loss tied to the
        parameters (zero gradients), so that the step is taken, found non-finite and dropped by the guard."""
        anchors = [p.reshape(-1)[:1].sum() for p in self.parameters() if p.requires_grad and p.numel()]
        zero = torch.stack(anchors).sum() * 0.0 if anchors else torch.zeros((), device=self.device)
        nan = zero + float("nan")
        return ELBOTerms(nan, nan.detach(), nan, nan, None, nan, None, None)

    def compute_terms(
        self,
        x: Tensor,
        n_samples: int | None = None,
        where: Callable[[], str] | None = None,
        report: bool = True,
        context: Tensor | None = None,
    ) -> tuple[ELBOTerms, VAEOutput]:
        """Evaluate the objective on ``x`` (and ``context``) by one pass of ``n_samples`` samples (default: the
        objective's), with its current weights.

        ``where`` describes the step (e.g. ``"validation batch 3"``) for a data-check error; it is called only
        when the check fails. ``report=False`` skips the reported values (see :class:`ELBOTerms`).
        """
        self._prepare(x, where)
        batch = Batch(x, context)
        out = self(x, n_samples or self.objective.n_samples, context)
        self.model.likelihood.check_params(x, out.decoder_output, sample_dims=1)
        return self.objective(self.model, batch, out.groups, report), out

    def training_loss(self, batch: Any) -> Tensor:
        """The loss :meth:`training_step` minimises on ``batch``, without logging (for extra inner updates)."""
        return self._training_terms(self.read_batch(batch), False, None).loss

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Minimise the objective's loss; return ``{"loss", "kl"}`` (the raw KL of the step, detached, for callbacks).

        Under ``on_nonfinite="skip"`` a non-finite loss is returned too (never ``None``, which Lightning refuses
        under distributed training): its gradients are dropped before the optimizer step, on every process alike.
        """
        data = self.read_batch(batch)
        trainer = self._trainer
        if self._step_logged:  # Lightning has published the last logged step's values by now
            retire_step_logs(trainer)
            self._step_logged = False
        report = trainer is None or logs_this_step(trainer) or self._epoch_edge(batch_idx)
        terms = self._training_terms(data, report, lambda: self._where(batch_idx))
        self.guard.observe_step(self, data.x, terms, trainer, batch_idx)
        if not self.automatic_optimization:
            terms = terms._replace(extra={**(terms.extra or {}), **self.objective.manual_step(self, terms)})
        if report:
            self._log_step(terms, data.x.shape[0])
        return {"loss": terms.loss, "kl": terms.kl.detach()}

    def _where(self, batch_idx: int) -> str:
        """The training step in words, for error messages."""
        trainer = self._trainer
        step, epoch = (trainer.global_step, trainer.current_epoch) if trainer is not None else (0, 0)
        return f"training: global step {step}, epoch {epoch}, batch {batch_idx}"

    def _epoch_edge(self, batch_idx: int) -> bool:
        """First or last training batch of the epoch: logged too, so short runs and epoch ends have values."""
        n = self._trainer.num_training_batches  # type: ignore[union-attr]  # called during fit only
        return batch_idx == 0 or (isinstance(n, int) and batch_idx == n - 1)

    def _log_step(self, terms: ELBOTerms, batch_size: int) -> None:
        values = {"train/loss": terms.loss, **_logged_terms("train", terms)}
        # One device-to-host copy for the step's values and the guard's kept losses (the loggers and the progress
        # bar then read host tensors); Python numbers as host tensors (Lightning would copy them to the device).
        host, losses = to_host(values, self.guard.pending_losses())
        self.guard.flush(self, losses)
        host.update({f"train/{name}": torch.tensor(float(value)) for name, value in self._weights().items()})
        self.log("train/loss", host.pop("train/loss"), prog_bar=True, batch_size=batch_size)
        self.log_dict(host, batch_size=batch_size)
        self._step_logged = True

    def _weights(self) -> dict[str, float]:
        """The objective's declared scalar weights (logged as ``train/<name>``)."""
        values = {name: getattr(self.objective, name, None) for name in self.objective.weights}
        return {name: value for name, value in values.items() if isinstance(value, (int, float))}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Any, stage: Stage, batch_idx: int) -> dict[str, Any]:
        data = self.read_batch(batch)
        x = data.x
        terms, out = self.compute_terms(
            x, n_samples=1, where=lambda: f"{stage} batch {batch_idx}", context=data.context
        )
        for name, metric in self.eval_metrics.update(stage, terms, x.shape[0], batch_idx).items():
            self.log(name, metric, prog_bar=name.endswith("/elbo"))
        for name, value in (terms.extra or {}).items():  # torchmetrics means: exact under DDP
            metric = self.eval_metrics.update_extra(stage, name, value, x.shape[0])
            self.log(f"{stage}/{name}", metric, metric_attribute=f"eval_metrics.extras.{stage}_{name}")
        if self.n_eval_samples > 1:
            # The same chunked estimator as ImportanceWeightedNLL: memory bounded by iw_chunk_size for any k.
            context = self._input(data.context) if getattr(self.model, "conditional", False) else None
            values = iw_nll(
                self,
                x,
                n_samples=self.n_eval_samples,
                chunk_size=self.iw_chunk_size,
                between_chunks=self._stop_if_asked,
                context=context,
            )
            self.log(f"{stage}/nll_iw", self.eval_metrics.update_nll(stage, values))
        inference = out.groups.inference
        per_dim = terms.kl_per_dim_groups or {}
        groups = {
            name: {"posterior": per_example(q, x.shape[0]), "z": inference.z[name][0], "kl_per_dim": per_dim.get(name)}
            for name, q in inference.posteriors.items()
        }
        first = groups[self.model.group_names[0]]
        return {"loss": terms.loss, **first, "groups": groups}

    def _stop_if_asked(self) -> None:
        """Between the chunks of a long importance-weighted estimate: honour a SIGTERM as Lightning's loops do."""
        if self._trainer is not None and self.trainer.received_sigterm:
            raise SIGTERMException

    def _end_eval_epoch(self, stage: Stage) -> None:
        report = self.eval_metrics.nonfinite_report(stage)
        if report is not None:
            if self._trainer is not None and self.trainer.sanity_checking:
                report = f"Sanity check (before training): {report}"
            if self.guard.policy == "raise":
                raise NonFiniteError(report)
            rank_zero_warn(report)
        shape = self.model.data_shape
        value = None if shape is None else self.eval_metrics.bits_per_dim(stage, shape, self.n_eval_samples > 1)
        if value is not None:  # already reduced across ranks; sync_dist only states that the value is global
            self.log(f"{stage}/bits_per_dim", value, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.eval_metrics.reset("val")

    def on_test_epoch_start(self) -> None:
        self.eval_metrics.reset("test")

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test", batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The posterior mean of the first latent group for each example, shape ``(B, D)``.

        A group conditioned on a sample of another (the top group of a stacked model) gives its mean at that sample.
        """
        data = self.read_batch(batch)
        context = data.context if getattr(self.model, "conditional", False) else None
        mean = self.encode(data.x, context).mean
        return mean[0] if mean.dim() == 3 else mean

    # ------------------------------------------------------------------ the run: faults, strategy, facts
    def setup(self, stage: str) -> None:
        """Read checkpoints safely (:func:`~lightning_vae.checkpoints.use_safe_checkpoint_io`: weights-only, CRCs
        checked, on resume too); refuse strategies that shard the parameters
        (:func:`~lightning_vae.training.faults.refuse_sharding`)."""
        if self._trainer is not None:
            refuse_sharding(self.trainer)
            use_safe_checkpoint_io(self.trainer)

    def on_fit_start(self) -> None:
        # On a CPU reading the loss costs nothing; elsewhere the guard keeps device values and reads them later.
        self.guard.deferred = self.device.type != "cpu"
        if self.guard.policy == "skip" and self.trainer.world_size > 1:
            rank_zero_warn(
                "on_nonfinite='skip' under several processes: a step is skipped on every rank when any "
                "rank's loss or the averaged gradients are non-finite (one all-reduce per step)."
            )
            self.guard.agree = agree_over_ranks

    def on_train_start(self) -> None:
        # The training loader exists from here on: the objective learns the dataset size and the process count.
        self.objective.setup(RunFacts(_dataset_size(self.trainer), self.trainer.world_size))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.guard.pending and (logs_this_step(self._trainer) or self._epoch_edge(batch_idx)):
            self.guard.flush(self)

    def on_train_epoch_end(self) -> None:
        self.guard.flush(self)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # Under 16-bit mixed precision the gradient scaler owns non-finite gradients (it skips those steps itself).
        scaled = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None) is not None
        self.guard.check_step(self, scaled=scaled)
        if not self.automatic_optimization:  # the gradients are unscaled here: the objective clips them
            self.objective.before_optimizer_step(self, optimizer)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write non-finite weights or optimizer state; record the sizes, the objective's state and the
        divergence rule's scale a reloaded model needs."""
        self.guard.flush(self)
        self.guard.check_parameters(self)
        self.guard.check_optimizer_states(checkpoint)
        shape = self.model.data_shape
        checkpoint["lightning_vae"] = {
            "latent_dim": getattr(self.model, "latent_dim", None),
            "data_shape": None if shape is None else list(shape),
            "objective": self.objective.state(),
            "guard": self.guard.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        migrate_state_dict(checkpoint)
        state = checkpoint.get("lightning_vae") or {}
        prior = getattr(self.model, "prior", None)
        if state.get("latent_dim") is not None and getattr(prior, "latent_dim", 0) is None:
            prior.latent_dim = int(state["latent_dim"])  # type: ignore[union-attr]
        if state.get("data_shape") is not None and self.model.data_shape is None:
            self.model.data_shape = tuple(int(d) for d in state["data_shape"])
        # Older checkpoints kept the ELBO's annealed values at the top of this record.
        objective_state = state.get(
            "objective", {k: state[k] for k in ("beta", "free_bits", "capacity", "group_betas") if k in state}
        )
        try:
            self.objective.load_state(objective_state)
        except (TypeError, ValueError) as err:
            raise ValueError(f"The checkpoint's objective state {objective_state!r} is refused: {err}") from None
        if isinstance(state.get("guard"), dict):
            self.guard.load_state_dict(state["guard"])

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load a ``VAE`` from a checkpoint file, refusing hostile or corrupt files before anything runs.

        The file is read with ``torch.load(weights_only=True)``; every class its hyperparameters name must be a
        network, ``Likelihood``, ``Prior``, ``Objective``, optimizer or scheduler class, checked before any is
        called (:func:`lightning_vae.building.check_checkpoint_classes`). Networks passed as keyword arguments
        replace the recorded ones.

        Raises:
            ValueError: For a missing, empty, truncated or non-checkpoint file, or a refused class, naming the file.
        """
        checkpoint = load_checkpoint(checkpoint_path)
        hparams = {k: v for k, v in (checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {}).items() if k not in kwargs}
        check_checkpoint_classes(hparams, source=str(checkpoint_path))
        try:
            return super().load_from_checkpoint(  # type: ignore[return-value]
                str(checkpoint_path),
                map_location=map_location,
                hparams_file=None if hparams_file is None else str(hparams_file),
                strict=strict,
                weights_only=True,
                **kwargs,
            )
        except RuntimeError as err:
            if any(s in str(err) for s in ("size mismatch", "Missing key", "Unexpected key")):
                raise ValueError(
                    f"The weights in {str(checkpoint_path)!r} do not fit the networks built for them (wrong shape "
                    f"for this network?): {err}"
                ) from err
            raise

    # ------------------------------------------------------------------ model setup and optimizers
    def configure_model(self) -> None:
        """Compile the model's networks when ``compile`` asks for it (idempotent; the Trainer calls it per process)."""
        if self._compile is None:
            return
        for net in _networks(self.model):
            if not is_compiled(net):
                net.compile(**self._compile)

    def configure_optimizers(self) -> Any:
        if not self.automatic_optimization:
            return _with_objective_optimizers(self)
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}


def _context(context: Tensor | None) -> dict[str, Tensor]:
    """The ``context`` keyword for the model's methods, left out when there is none."""
    return {} if context is None else {"context": context}


def _logged_terms(stage: str, terms: ELBOTerms) -> dict[str, Tensor]:
    """The step values the loggers get, named after the terms the objective returned (the loss is logged apart)."""
    values: dict[str, Tensor] = {f"{stage}/recon": terms.recon, f"{stage}/kl": terms.kl}
    if terms.elbo is not None:
        values[f"{stage}/elbo"] = terms.elbo
    if terms.iwae is not None:
        values[f"{stage}/iwae"] = terms.iwae
    if terms.kl_groups is not None and len(terms.kl_groups) > 1:
        values.update({f"{stage}/kl/{name}": kl for name, kl in terms.kl_groups.items()})
    values.update({f"{stage}/{name}": value.detach() for name, value in (terms.extra or {}).items()})
    return values


def _dataset_size(trainer: Any) -> int | None:
    """Examples in the training set over all processes, or ``None`` when the loader does not tell."""
    try:
        loaders = trainer.train_dataloader
        first = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if isinstance(first, Mapping):
            first = next(iter(first.values()))
        return len(first.dataset)
    except (AttributeError, TypeError, IndexError, StopIteration, NotImplementedError):
        return None


def _with_objective_optimizers(module: VAE) -> list[Any]:
    """The model's optimizer over every parameter the objective's own optimizers do not hold, then those."""
    own = module.objective.configure_optimizers()
    if module.lr_scheduler_factory is not None:
        raise ValueError(
            f"Expected no `lr_scheduler` with {type(module.objective).__name__}, which steps its own optimizers, got "
            f"{module.lr_scheduler_factory!r}"
        )
    held = {id(p) for optimizer in own for group in optimizer.param_groups for p in group["params"]}
    return [module.optimizer_factory([p for p in module.parameters() if id(p) not in held]), *own]


def _networks(model: nn.Module) -> list[nn.Module]:
    """The networks ``compile`` compiles: the encoder and decoder of a single-group model, else the model."""
    parts = [getattr(model, name, None) for name in ("encoder", "decoder")]
    return [p for p in parts if isinstance(p, nn.Module)] or [model]


__all__ = ["VAE", "VAEOutput"]
