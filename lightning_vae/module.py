"""``VAE``: the LightningModule that trains a latent-variable model with the objective of ``objective.py``.

The model (inference and generative paths, see :mod:`lightning_vae.models`) is a plain ``nn.Module`` held as
``VAE.model``; this module keeps the steps, the metrics, the logging, the optimizers and the fault policy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.distributions import Distribution

from lightning_vae.building import build, save_hparams
from lightning_vae.checks import check_choice, check_float, check_int, check_type
from lightning_vae.data.common import unpack_batch
from lightning_vae.distributions.likelihoods import Likelihood
from lightning_vae.distributions.priors import Prior
from lightning_vae.evaluation import EvalMetrics
from lightning_vae.functional.nll import IW_CHUNK_SIZE
from lightning_vae.guard import DataCheck, NonFiniteGuard, NonFinitePolicy
from lightning_vae.hooks import CheckpointHooks, EvaluationSteps, FaultHooks, ModelParts, TrainingStep
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.models.vae import LikelihoodName, PriorName, VAEModel
from lightning_vae.objective import ELBOTerms, FreeBitsMode, check_single_sample, elbo_groups


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


class VAE(TrainingStep, EvaluationSteps, ModelParts, CheckpointHooks, FaultHooks):
    """A variational autoencoder around any encoder and decoder, or any latent-variable model.

    ``VAE(encoder, decoder, likelihood=..., prior=...)`` builds the single-group
    :class:`~lightning_vae.models.VAEModel`; ``VAE(model=...)`` trains any
    :class:`~lightning_vae.models.LatentVariableModel` (hierarchical models, flow posteriors). The loss is the
    β-ELBO with optional free bits, the capacity objective, or the IWAE bound (``n_samples > 1``); see
    :func:`lightning_vae.objective.elbo_groups`. Every logged value is in nats per example. Training logs
    ``train/loss``, ``train/elbo``, ``train/recon``, ``train/kl``, ``train/beta`` and ``train/free_bits`` on the
    steps whose values reach the loggers and on the first and last batch of each epoch; validation and test log
    ``val/...`` and ``test/...`` epoch means through torchmetrics, identical under DDP.

    The annealing protocol: callbacks may set :attr:`beta`, :attr:`free_bits` and :attr:`capacity` between
    steps. Data are checked against the likelihood (finite, within its range) on every batch on the CPU, and on
    accelerators on the first 10 batches and every 25th after.

    Args:
        encoder: Network ``x -> (loc, log_var)`` (or a distribution with event shape ``(D,)``).
        decoder: Network ``z -> likelihood parameters``.
        likelihood: ``"bernoulli"``, ``"gaussian"`` (σ = 1), ``"gaussian_learned"``, ``"gaussian_per_dim"``,
            ``"laplace"``, ``"categorical"``, ``"logistic_mixture"`` or a
            :class:`~lightning_vae.distributions.Likelihood`.
        prior: ``"standard_normal"``, ``"learnable"``, ``"mixture"``, ``"vamp"`` or a
            :class:`~lightning_vae.distributions.Prior`.
        beta: Weight of the KL term; must be positive (annealing callbacks may lower it to 0 later).
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
            :mod:`lightning_vae.guard`.
        max_nonfinite_skips: With ``on_nonfinite="skip"``, the most non-finite steps in a row.
        divergence_ratio: Stop with a :class:`~lightning_vae.guard.DivergenceError` when a finite training loss
            exceeds this many times the run's scale (the absolute loss of its first step, at least 1 nat);
            ``None`` turns the check off.
        iw_chunk_size: Most (sample, example) pairs decoded at once for the importance-weighted NLL.
        model: A :class:`~lightning_vae.models.LatentVariableModel` to train instead of building one from
            ``encoder`` and ``decoder`` (then leave those and the other model arguments out).

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
    ) -> None:
        super().__init__()
        given = {"encoder": build(encoder, "encoder"), "decoder": build(decoder, "decoder")}
        given.update(likelihood=build(likelihood, "likelihood"), prior=build(prior, "prior"))
        model = build(model, "model")
        self._beta = check_float("beta", beta, low=0.0, strict_low=True)
        self.free_bits = check_float("free_bits", free_bits, low=0.0)
        self.free_bits_mode: FreeBitsMode = check_choice("free_bits_mode", free_bits_mode, FreeBitsMode)
        self.free_bits_groups = check_int("free_bits_groups", free_bits_groups, low=1)
        self.n_samples = check_int("n_samples", n_samples, low=1)
        self.n_eval_samples = check_int("n_eval_samples", n_eval_samples, low=0)
        self.capacity = None if capacity is None else check_float("capacity", capacity, low=0.0)
        check_single_sample(n_samples, self.free_bits, self.capacity)
        self.capacity_gamma = check_float("capacity_gamma", capacity_gamma, low=0.0, strict_low=True)
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
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.eval_metrics = EvalMetrics(self.model.group_names)
        self.data_check = DataCheck()
        self._shapes_fixed = False
        #: Whether the training step takes the diagonal-Gaussian fast path (decided at the first step).
        self._fast: bool | None = None
        #: Annealing protocol: weights of chosen latent groups' KL in place of `beta` (e.g. {"z2": 0.1}).
        self.group_betas: dict[str, float] = {}
        frame = inspect.currentframe()
        save_hparams(self, frame, {**given, "model": model}, {"optimizer": optimizer, "lr_scheduler": lr_scheduler})

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

    # ------------------------------------------------------------------ the annealing protocol
    @property
    def beta(self) -> float:
        """Weight of the KL term; callbacks may set it between steps (any value >= 0)."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = check_float("beta", value, low=0.0)

    def forward(self, x: Tensor, n_samples: int = 1) -> VAEOutput:
        """One pass of the model: infer ``n_samples`` samples of every latent group, generate from them."""
        out = self.model(x, n_samples)
        first = self.model.group_names[0]
        posterior, z = out.inference.posteriors[first], out.inference.z[first]
        return VAEOutput(posterior, z, out.generative.params, out.generative.priors[first], out)

    # ------------------------------------------------------------------ the objective
    def unpack_batch(self, batch: Any) -> Tensor:
        """The data tensor of a batch given as a tensor, an ``(x, y, ...)`` sequence or a dict."""
        return unpack_batch(batch)

    def compute_terms(
        self,
        x: Tensor,
        n_samples: int | None = None,
        where: Callable[[], str] | None = None,
        report: bool = True,
    ) -> tuple[ELBOTerms, VAEOutput]:
        """Evaluate the objective on ``x`` with the module's current β, free bits and capacity.

        ``where`` describes the step (e.g. ``"validation batch 3"``) for a data-check error; it is called only
        when the check fails. ``report=False`` skips the reported values (see :class:`ELBOTerms`).
        """
        self.data_check(self.model.likelihood, x, self.guard.policy, where)
        if not self._shapes_fixed:  # once: sizes the model could not know at construction
            self.model.fix_shapes(x)
            self._shapes_fixed = True
        out = self(x, n_samples or self.n_samples)
        params = out.decoder_output
        self.model.likelihood.check_params(x, params, sample_dims=1)
        inference, generative = out.groups
        terms = elbo_groups(
            x, inference.posteriors, inference.z, params, self.model.likelihood, generative.priors,
            group_betas=self.group_betas or None, **self._settings(report),
        )  # fmt: skip
        return terms, out

    def configure_model(self) -> None:
        """Compile the model's networks when ``compile`` asks for it (idempotent; the Trainer calls it per process)."""
        if self._compile is None:
            return
        for net in _networks(self.model):
            if getattr(net, "_compiled_call_impl", None) is None:
                net.compile(**self._compile)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}


def _networks(model: nn.Module) -> list[nn.Module]:
    """The networks ``compile`` compiles: the encoder and decoder of a single-group model, else the model."""
    parts = [getattr(model, name, None) for name in ("encoder", "decoder")]
    return [p for p in parts if isinstance(p, nn.Module)] or [model]


__all__ = ["VAE", "VAEOutput"]
