"""``VAE``: a LightningModule that wires any encoder and decoder to the objective in ``objective.py``."""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.distributions import Distribution
from torchmetrics import MeanMetric

from lightning_vae.building import build, check_checkpoint_classes, describe, load_checkpoint
from lightning_vae.distributions.likelihoods import LIKELIHOODS, Likelihood
from lightning_vae.distributions.posteriors import as_posterior
from lightning_vae.distributions.priors import (
    PRIORS,
    LearnableGaussianPrior,
    MixtureOfGaussiansPrior,
    Prior,
    StandardNormalPrior,
    VampPrior,
)
from lightning_vae.functional.math import bits_per_dim
from lightning_vae.functional.nll import iw_nll
from lightning_vae.guard import NonFiniteError, NonFiniteGuard, NonFinitePolicy
from lightning_vae.objective import ELBOTerms, FreeBitsMode, elbo
from lightning_vae.utilities import logs_this_step

LikelihoodName = Literal[
    "bernoulli", "gaussian", "gaussian_learned", "gaussian_per_dim", "laplace", "categorical", "logistic_mixture"
]
PriorName = Literal["standard_normal", "learnable", "mixture", "vamp"]

#: Data are checked (NaN/inf, range of the likelihood) on this many first batches, then every Nth batch.
CHECKED_FIRST_BATCHES, CHECK_EVERY_N_BATCHES = 10, 50

#: Dict keys under which ``VAE`` looks for the data in a dict batch, in this order.
BATCH_KEYS = ("x", "image", "images", "input", "inputs", "data")

_MODULE_ARGS = ("encoder", "decoder", "likelihood", "prior")
_EVAL_TERMS = ("loss", "elbo", "recon", "kl")


class VAEOutput(NamedTuple):
    """What :meth:`VAE.forward` returns.

    Attributes:
        posterior: q(z|x), batch shape ``(B,)``, event shape ``(D,)``.
        z: Samples from q of shape ``(k, B, D)``.
        decoder_output: Likelihood parameters for each sample, ``(k, B, *param_shape)``.
        prior: p(z) as a distribution with event shape ``(D,)``.
    """

    posterior: Distribution
    z: Tensor
    decoder_output: Tensor
    prior: Distribution


def _check_float(name: str, value: Any, *, low: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"Expected `{name}` to be a finite float, got {value!r}")
    if value < low or (strict and value == low):
        relation = ">" if strict else ">="
        raise ValueError(f"Expected `{name}` to be {relation} {low:g}, got {value!r}")
    return float(value)


class VAE(LightningModule):
    """A variational autoencoder around any encoder and decoder.

    The encoder maps ``x`` to ``(loc, log_var)`` (or a ``torch.distributions`` distribution with event
    shape ``(D,)``); the decoder maps ``z`` of shape ``(..., D)`` to the likelihood's parameters. The
    loss is the β-ELBO with optional free bits, the capacity objective, or the IWAE bound
    (``n_samples > 1``); see :func:`lightning_vae.objective.elbo`.

    Every logged value is in nats per example (summed over data and latent dimensions, averaged
    over the batch). Training logs ``train/loss``, ``train/elbo``, ``train/recon``, ``train/kl``,
    ``train/beta`` and ``train/free_bits`` without host synchronisation, on the steps whose values
    reach the loggers (every ``Trainer(log_every_n_steps=...)``, 50 by default) and on the first and
    last batch of each epoch; the progress bar shows the loss of the last such step. Validation and
    test log ``val/...`` and ``test/...`` epoch values through torchmetrics, identical under DDP.

    The annealing protocol: callbacks may set :attr:`beta`, :attr:`free_bits` and :attr:`capacity`
    between steps; the loss reads them at every step.

    Data are checked against the likelihood (finite, within its range, e.g. [0, 1] for Bernoulli) on
    the first 10 batches and every 50th batch after, so a bad data set stops at once with a message
    that names the problem, at a negligible cost per step.

    Args:
        encoder: Network ``x -> (loc, log_var)``.
        decoder: Network ``z -> likelihood parameters``.
        likelihood: A name (``"bernoulli"``, ``"gaussian"`` (σ = 1), ``"gaussian_learned"``,
            ``"gaussian_per_dim"``, ``"laplace"``, ``"categorical"``, ``"logistic_mixture"``) or a
            :class:`~lightning_vae.distributions.Likelihood`.
        prior: A name (``"standard_normal"``, ``"learnable"``, ``"mixture"``, ``"vamp"``) or a
            :class:`~lightning_vae.distributions.Prior`.
        beta: Weight of the KL term; must be positive (annealing callbacks may lower it to 0 later).
        free_bits: λ in nats (Kingma et al. 2016); 0 disables free bits.
        free_bits_mode: ``"dim"`` (each latent dimension), ``"group"`` or ``"total"``.
        free_bits_groups: Number of equal groups of latent dimensions for ``free_bits_mode="group"``.
        n_samples: Importance samples k of the training bound; above 1 the loss is the IWAE bound.
        n_eval_samples: Importance samples used in validation/test for ``val/nll_iw``; 0 skips it.
        capacity: Target KL in nats for the capacity objective ``recon + γ|KL - C|`` (Burgess et al.
            2018), or ``None``.
        capacity_gamma: γ of the capacity objective.
        latent_dim: Size of z, needed by the learnable and mixture priors when the encoder does not
            have a ``latent_dim`` attribute.
        data_shape: Shape of one example, needed by the VampPrior and per-dimension likelihoods
            when the encoder has no ``input_shape`` attribute.
        prior_components: Components of the mixture prior or pseudo-inputs of the VampPrior.
        optimizer: Callable that builds the optimiser from the parameters (default Adam, lr 1e-3).
        lr_scheduler: Optional callable that builds a scheduler from the optimiser.
        compile: Compile the encoder and decoder with ``torch.compile`` (in place: parameter names and
            checkpoints are those of the uncompiled networks); a dict gives ``torch.compile``'s keyword
            arguments (e.g. ``{"mode": "max-autotune"}``). The networks are compiled in
            :meth:`configure_model`, which the Trainer calls in every process (a compiled network does not
            survive pickling to ``ddp_spawn`` workers); without a Trainer, call ``configure_model()``.
        on_nonfinite: What a NaN or inf training loss does: ``"raise"`` stops the run with an error that
            names the step, the batch and the term (the last checkpoint on disk stays the last finite
            state); ``"skip"`` skips the step (no parameter or optimizer-state change) and stops after
            ``max_nonfinite_skips`` such steps in a row. See :mod:`lightning_vae.guard`.
        max_nonfinite_skips: With ``on_nonfinite="skip"``, the most non-finite steps in a row.
        iw_chunk_size: Most (sample, example) pairs decoded at once for ``val/nll_iw`` and ``test/nll_iw``,
            so memory stays bounded for any ``n_eval_samples`` (5000 is the standard protocol).

    Raises:
        ValueError: For a missing encoder/decoder, an unknown likelihood or prior, or bad numbers.

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
        iw_chunk_size: int = 2048,
    ) -> None:
        super().__init__()
        encoder, decoder = build(encoder, "encoder"), build(decoder, "decoder")
        likelihood, prior = build(likelihood, "likelihood"), build(prior, "prior")
        if encoder is None or decoder is None:
            missing = " and ".join(n for n, m in (("encoder", encoder), ("decoder", decoder)) if m is None)
            raise ValueError(
                f"VAE needs an {missing}. When loading a checkpoint of networks that do not record their arguments, "
                f"pass them again: VAE.load_from_checkpoint(path, encoder=..., decoder=...)"
            )
        for name, net in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(net, nn.Module):
                raise TypeError(f"Expected `{name}` to be a torch.nn.Module, got {type(net).__name__}")
        self._beta = _check_float("beta", beta, low=0.0, strict=True)
        self.free_bits = _check_float("free_bits", free_bits, low=0.0, strict=False)
        if free_bits_mode not in ("dim", "group", "total"):
            raise ValueError(
                f"Expected `free_bits_mode` to be one of ('dim', 'group', 'total'), got {free_bits_mode!r}"
            )
        self.free_bits_mode: FreeBitsMode = free_bits_mode
        self.free_bits_groups = int(free_bits_groups)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"Expected `n_samples` to be an int >= 1, got {n_samples!r}")
        if isinstance(n_eval_samples, bool) or not isinstance(n_eval_samples, int) or n_eval_samples < 0:
            raise ValueError(f"Expected `n_eval_samples` to be an int >= 0, got {n_eval_samples!r}")
        if n_samples > 1 and (free_bits > 0 or capacity is not None):
            raise ValueError(
                f"Free bits and the capacity objective apply to the single-sample ELBO, got n_samples={n_samples}; "
                "set n_samples=1, or free_bits=0 and capacity=None"
            )
        self.n_samples, self.n_eval_samples = n_samples, n_eval_samples
        self.capacity = None if capacity is None else _check_float("capacity", capacity, low=0.0, strict=False)
        self.capacity_gamma = _check_float("capacity_gamma", capacity_gamma, low=0.0, strict=True)
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"Expected `on_nonfinite` to be one of ('raise', 'skip'), got {on_nonfinite!r}")
        for name, value in (("max_nonfinite_skips", max_nonfinite_skips), ("iw_chunk_size", iw_chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be an int >= 1, got {value!r}")
        self.guard = NonFiniteGuard(on_nonfinite, max_nonfinite_skips)
        self.iw_chunk_size = iw_chunk_size

        self.encoder, self.decoder = encoder, decoder
        if not isinstance(compile, (bool, Mapping)):
            raise TypeError(f"Expected `compile` to be a bool or a dict of torch.compile arguments, got {compile!r}")
        #: torch.compile's arguments, or None: no compilation (see configure_model).
        self._compile: dict[str, Any] | None = dict(compile) if isinstance(compile, Mapping) else None
        if compile is True:
            self._compile = {}
        # New names for the derived values: hparams record the arguments as given (as LightningCLI does).
        derived_latent_dim = latent_dim if latent_dim is not None else getattr(encoder, "latent_dim", None)
        derived_shape = data_shape if data_shape is not None else getattr(encoder, "input_shape", None)
        self.data_shape = None if derived_shape is None else tuple(derived_shape)
        self.likelihood = self._make_likelihood(likelihood, self.data_shape)
        self.prior = self._make_prior(prior, derived_latent_dim, self.data_shape, prior_components)
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler

        # NaN enters the means (nan_strategy="disable"): a non-finite batch makes the epoch value NaN, never
        # optimistic; the module counts such batches and raises or warns at the end of the epoch.
        metrics = {
            f"{stage}_{term}": MeanMetric(nan_strategy="disable")
            for stage in ("val", "test")
            for term in (*_EVAL_TERMS, "nll_iw")
        }
        self.eval_metrics = nn.ModuleDict(metrics)
        self._checked_batches = 0
        self._eval_losses: list[tuple[int, Tensor]] = []
        self._save_hparams(encoder, decoder, likelihood, prior)

    # ------------------------------------------------------------------ construction helpers
    def _save_hparams(self, *modules: Any) -> None:
        """Save the arguments; modules only as reloadable descriptions, never pickled into ``hparams``."""
        ignore = [name for name, m in zip(_MODULE_ARGS, modules) if isinstance(m, nn.Module)]
        ignore += [n for n in ("optimizer", "lr_scheduler") if not isinstance(getattr(self, f"{n}_factory"), Mapping)]
        frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        self.save_hyperparameters(ignore=ignore, frame=frame)
        if "_instantiator" in self.hparams:
            # Built by LightningCLI: the hparams are its parsed config, where every network is a
            # class_path/init_args dict. Keep all of it so any network, built-in or not, reloads alone.
            self.save_hyperparameters(frame=frame)
            return
        extra = {name: d for name, m in zip(_MODULE_ARGS, modules) if (d := describe(m)) is not None}
        if extra:
            self.save_hyperparameters({**dict(self.hparams), **extra})

    @staticmethod
    def _make_likelihood(likelihood: Any, data_shape: tuple[int, ...] | None) -> Likelihood:
        if isinstance(likelihood, Likelihood):
            return likelihood
        if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
            raise ValueError(
                f"Expected `likelihood` to be one of {sorted(LIKELIHOODS)} or a Likelihood, got {likelihood!r}"
            )
        return LIKELIHOODS[likelihood](data_shape)

    @staticmethod
    def _make_prior(prior: Any, latent_dim: int | None, data_shape: tuple[int, ...] | None, components: int) -> Prior:
        if isinstance(prior, Prior):
            return prior
        if not isinstance(prior, str) or prior not in PRIORS:
            raise ValueError(f"Expected `prior` to be one of {sorted(PRIORS)} or a Prior, got {prior!r}")
        if prior == "standard_normal":
            return StandardNormalPrior(latent_dim)
        if prior == "vamp":
            if data_shape is None:
                raise ValueError("The VampPrior needs `data_shape` (the shape of one example), e.g. (1, 28, 28)")
            return VampPrior(data_shape, n_components=components, latent_dim=latent_dim)
        if latent_dim is None:
            raise ValueError(f"The {prior!r} prior needs `latent_dim` (the encoder has no `latent_dim` attribute)")
        if prior == "learnable":
            return LearnableGaussianPrior(latent_dim)
        return MixtureOfGaussiansPrior(latent_dim, n_components=components)

    # ------------------------------------------------------------------ the annealing protocol
    @property
    def beta(self) -> float:
        """Weight of the KL term; callbacks may set it between steps (any value >= 0)."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = _check_float("beta", value, low=0.0, strict=False)

    # ------------------------------------------------------------------ model API
    def encode(self, x: Tensor) -> Distribution:
        """q(z|x) for a batch ``x``: a distribution with batch shape ``(B,)`` and event shape ``(D,)``."""
        q = as_posterior(self.encoder(x))
        if isinstance(self.prior, StandardNormalPrior) and self.prior.latent_dim is None:
            self.prior.latent_dim = int(q.event_shape[0])
        return q

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """The decoder's likelihood parameters for latents ``z`` of shape ``(..., D)``.

        An autoregressive decoder (one with ``autoregressive = True``, e.g.
        :class:`~lightning_vae.nets.PixelCNNDecoder`) is called as ``decoder(z, x)`` and needs the data
        ``x`` of shape ``(B, *data_shape)``; ``z`` may then carry leading sample dimensions ``(..., B, D)``.
        """
        if not self.autoregressive:
            return self.decoder(z)
        if x is None:
            raise ValueError(
                f"The autoregressive decoder {type(self.decoder).__name__} needs the data: call decode(z, x)"
            )
        return self.decoder(z, x.expand(*z.shape[:-1], *x.shape[1:]))

    @property
    def autoregressive(self) -> bool:
        """Whether the decoder models ``p(x_i | x_<i, z)`` and takes ``(z, x)``."""
        return bool(getattr(self.decoder, "autoregressive", False))

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x, z) = log p(x|z) + log p(z)`` in nats for latents ``z`` of shape ``(S, B, D)``: shape ``(S, B)``.

        With :meth:`encode` this is the protocol the importance-weighted NLL
        (:class:`~lightning_vae.metrics.ImportanceWeightedNLL`) needs.
        """
        params = self.decode(z, x)
        return self.likelihood.log_prob(x, params) + self.prior_distribution().log_prob(z).float()

    def training_loss(self, batch: Any) -> Tensor:
        """The loss :meth:`training_step` minimises on ``batch``, without logging (for extra inner updates)."""
        return self.compute_terms(self.unpack_batch(batch))[0].loss

    def _ensure_latent_dim(self) -> None:
        """Give a prior that learns its size from the encoder that size before sampling (one encoder pass)."""
        if not isinstance(self.prior, StandardNormalPrior) or self.prior.latent_dim is not None:
            return
        if self.data_shape is None:
            raise ValueError(
                "Cannot sample: the latent size is unknown (the encoder has no `latent_dim` attribute and no data "
                "was seen). Pass VAE(latent_dim=...) or data_shape=..., or encode a batch first"
            )
        was_training = self.training
        self.eval()
        with torch.no_grad():
            self.encode(torch.zeros(1, *self.data_shape, device=self.device))
        self.train(was_training)

    def prior_distribution(self) -> Distribution:
        """p(z) as a distribution with event shape ``(D,)``."""
        return self.prior(self.encoder)

    def forward(self, x: Tensor, n_samples: int = 1) -> VAEOutput:
        """Encode ``x``, draw ``n_samples`` reparameterised samples per example, decode them."""
        q = self.encode(x)
        z = q.rsample((n_samples,))
        if self.autoregressive:
            params = self.decode(z, x)
        else:
            params = self.decoder(z.reshape(-1, z.shape[-1]))
            params = params.reshape(n_samples, x.shape[0], *params.shape[1:])
        return VAEOutput(posterior=q, z=z, decoder_output=params, prior=self.prior_distribution())

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> Tensor:
        """Draw ``n`` examples from the model: z ~ p(z), then the likelihood mean (or a sample of x).

        An autoregressive decoder is sampled pixel by pixel in raster order (one decoder pass per
        pixel); ``mean=True`` then returns the mean of each pixel given the pixels drawn before it.
        """
        self._ensure_latent_dim()
        z = self.prior_distribution().sample((n,)).to(self.device)
        if not self.autoregressive:
            params = self.decoder(z)
            return self.likelihood.mean(params) if mean else self.likelihood.sample(params)
        shape = getattr(self.decoder, "image_shape", None) or self.data_shape
        if shape is None:
            raise ValueError("Sampling an autoregressive decoder needs `data_shape` (or a decoder with `image_shape`)")
        x = torch.zeros(n, *shape, device=self.device)
        for i in range(shape[-2]):
            for j in range(shape[-1]):
                x[..., i, j] = self.likelihood.sample(self.decoder(z, x))[..., i, j]
        params = self.decoder(z, x)
        return self.likelihood.mean(params) if mean else x

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean of ``x`` and return the likelihood mean (in data space).

        An autoregressive decoder sees ``x`` itself (teacher forcing): each pixel's mean given the
        true pixels before it.
        """
        return self.likelihood.mean(self.decode(self.encode(x).mean, x))

    # ------------------------------------------------------------------ objective
    def unpack_batch(self, batch: Any) -> Tensor:
        """Return the data tensor of a batch given as a tensor, an ``(x, y, ...)`` sequence or a dict."""
        if isinstance(batch, Tensor):
            return batch
        if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            return batch[0]
        if isinstance(batch, Mapping):
            for key in BATCH_KEYS:
                if key in batch and isinstance(batch[key], Tensor):
                    return batch[key]
            raise ValueError(
                f"Expected a dict batch to hold the data under one of {BATCH_KEYS}, got keys {sorted(batch)}"
            )
        raise TypeError(
            "Expected a batch that is a tensor, a tuple/list starting with a tensor, or a dict, got "
            f"{type(batch).__name__}"
        )

    def _check_batch(self, x: Tensor, where: Callable[[], str] | None) -> None:
        # The range check is one fused min/max reduction and one host read (a sync on accelerators): run it on
        # the first batches, where bad data shows, then every 50th. NaN/inf data in any other batch makes that
        # batch's loss non-finite, which the non-finite policy catches at every step.
        if self._checked_batches < CHECKED_FIRST_BATCHES or self._checked_batches % CHECK_EVERY_N_BATCHES == 0:
            try:
                self.likelihood.check_target(x)
            except ValueError as err:
                context = f" ({where()})" if where is not None else ""
                if bool(torch.isfinite(x).all()):
                    raise ValueError(f"{err}{context}") from None
                if self.guard.policy == "raise":
                    raise NonFiniteError(f"{err}{context}") from None
                # under "skip" the step is skipped (training) or counted (evaluation) by the non-finite policy
        self._checked_batches += 1

    def compute_terms(
        self, x: Tensor, n_samples: int | None = None, where: Callable[[], str] | None = None
    ) -> tuple[ELBOTerms, VAEOutput]:
        """Evaluate the objective on ``x`` with the module's current β, free bits and capacity.

        ``where`` returns the step's description (e.g. ``"validation batch 3"``) for the message of a data-check
        error; it is called only when the check fails, so the step formats no string.
        """
        self._check_batch(x, where)
        if self.data_shape is None:  # learned from the data when neither given nor known to the encoder
            self.data_shape = tuple(x.shape[1:])
        out = self(x, n_samples or self.n_samples)
        self.likelihood.check_params(x, out.decoder_output, sample_dims=1)
        terms = elbo(
            x,
            out.posterior,
            out.z,
            out.decoder_output,
            self.likelihood,
            out.prior,
            beta=self.beta,
            free_bits=self.free_bits,
            free_bits_mode=self.free_bits_mode,
            free_bits_groups=self.free_bits_groups,
            capacity=self.capacity,
            capacity_gamma=self.capacity_gamma,
        )
        return terms, out

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor] | None:
        """Minimise the loss; return ``{"loss", "kl"}`` (the raw KL of the step, detached, for callbacks).

        Returns ``None`` (Lightning then skips the backward pass and the optimizer step) for a step whose
        loss is non-finite under ``on_nonfinite="skip"``.
        """
        x = self.unpack_batch(batch)
        trainer = self._trainer
        step, epoch = (trainer.global_step, trainer.current_epoch) if trainer is not None else (0, 0)
        where = lambda: f"training: global step {step}, epoch {epoch}, batch {batch_idx}"  # noqa: E731
        terms, _ = self.compute_terms(x, where=where)
        if self.guard.observe(self, x, terms, step=step, batch_idx=batch_idx, epoch=epoch):
            return None
        # Step values reach the loggers (and the progress bar) every `log_every_n_steps`; calling self.log on
        # the steps in between would cost more Python time than a small model's loss itself.
        if self._trainer is None or logs_this_step(self._trainer) or self._epoch_edge(batch_idx):
            values: dict[str, Tensor | float] = {
                "train/elbo": terms.elbo,
                "train/recon": terms.recon,
                "train/kl": terms.kl,
            }
            # Host tensors: Lightning would copy a Python number to the device (a blocking copy there).
            values.update({"train/beta": torch.tensor(self.beta), "train/free_bits": torch.tensor(self.free_bits)})
            if terms.iwae is not None:
                values["train/iwae"] = terms.iwae
            # The progress bar reads its values at every refresh (every batch by default): give it a host copy,
            # made here on a logging step, so the steps in between never wait on the device.
            self.log("train/loss", terms.loss.detach().cpu(), prog_bar=True, batch_size=x.shape[0])
            self.log_dict(values, batch_size=x.shape[0])
        return {"loss": terms.loss, "kl": terms.kl.detach()}

    def configure_model(self) -> None:
        """Compile the encoder and decoder when ``compile`` asks for it (idempotent; see the class docstring).

        The Trainer calls this hook in every process before training, evaluation or prediction.
        ``nn.Module.compile`` compiles in place, so parameter names and checkpoints stay those of the
        uncompiled networks; pickling (``ddp_spawn``) drops the compiled call, and this compiles again.
        """
        if self._compile is None:
            return
        for net in (self.encoder, self.decoder):
            if getattr(net, "_compiled_call_impl", None) is None:
                net.compile(**self._compile)

    def setup(self, stage: str) -> None:
        """Refuse strategies that shard the parameters over several processes (FSDP, DeepSpeed stage 3).

        Callbacks and evaluation call the encoder and decoder outside the module's forward, some on global
        rank zero only (image views, embeddings); with sharded parameters those calls see shards or wait
        for an all-gather the other ranks never join. The networks these VAEs use fit on one device, so
        data parallelism (DDP) is the supported way to scale; FSDP on a single process shards nothing and
        is accepted.

        Raises:
            ValueError: For a sharding strategy with more than one process.
        """
        if self._trainer is None or self.trainer.world_size <= 1:
            return
        strategy = self.trainer.strategy
        sharded = isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)) or bool(
            getattr(strategy, "zero_stage_3", False)
        )
        if sharded:
            raise ValueError(
                f"VAE does not support sharded training ({type(strategy).__name__} with {self.trainer.world_size} "
                "processes): callbacks and evaluation call the encoder and decoder outside the sharded forward, some "
                "on rank zero only. Use data parallelism: Trainer(strategy='ddp', devices=N) (the networks fit on one "
                "device)."
            )

    # ------------------------------------------------------------------ the non-finite policy
    def on_fit_start(self) -> None:
        # On a CPU reading the loss costs nothing; elsewhere the guard keeps device values and reads them later.
        self.guard.deferred = self.device.type != "cpu"
        if self.guard.policy == "skip" and self._world_size() > 1:
            rank_zero_warn("on_nonfinite='skip' under several processes: a step is skipped on every rank when any "
                           "rank's loss is non-finite (one all-reduce per step).")
            self.guard.agree = self._all_ranks_finite

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _all_ranks_finite(self, finite: Tensor) -> Tensor:
        import torch.distributed as dist

        flag = finite.float().reshape(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return flag[0] > 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.guard.pending and (logs_this_step(self._trainer) or self._epoch_edge(batch_idx)):
            self.guard.flush(self)

    def on_train_epoch_end(self) -> None:
        self.guard.flush(self)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # Under 16-bit mixed precision the gradient scaler owns non-finite gradients (it skips those steps itself).
        scaler = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)
        if scaler is None:
            self.guard.check_gradients(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write non-finite weights; record the sizes and annealed values a reloaded model needs."""
        self.guard.flush(self)
        self.guard.check_parameters(self)
        checkpoint["lightning_vae"] = {
            "latent_dim": getattr(self.prior, "latent_dim", None),
            "data_shape": None if self.data_shape is None else list(self.data_shape),
            "beta": self.beta,
            "free_bits": self.free_bits,
            "capacity": self.capacity,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lightning_vae") or {}
        if state.get("latent_dim") is not None and getattr(self.prior, "latent_dim", 0) is None:
            self.prior.latent_dim = int(state["latent_dim"])
        if state.get("data_shape") is not None and self.data_shape is None:
            self.data_shape = tuple(int(d) for d in state["data_shape"])
        if "beta" in state:
            self._beta = float(state["beta"])
            self.free_bits = float(state["free_bits"])
            self.capacity = None if state["capacity"] is None else float(state["capacity"])

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> VAE:
        """Load a ``VAE`` from a checkpoint file, refusing hostile or corrupt files before anything runs.

        The file is read with ``torch.load(weights_only=True)``; every class its hyperparameters name must
        be a network (``nn.Module``), ``Likelihood``, ``Prior``, optimizer or scheduler class
        (:func:`lightning_vae.building.check_checkpoint_classes`), checked before any is called. Networks
        passed as keyword arguments replace the recorded ones.

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
            if "size mismatch" in str(err) or "Missing key" in str(err) or "Unexpected key" in str(err):
                raise ValueError(
                    f"The weights in {str(checkpoint_path)!r} do not fit the networks built for them (wrong shape "
                    f"for this network?): {err}"
                ) from err
            raise

    def _epoch_edge(self, batch_idx: int) -> bool:
        """First or last training batch of the epoch: logged too, so short runs and epoch ends have values."""
        n = self.trainer.num_training_batches
        return batch_idx == 0 or (isinstance(n, int) and batch_idx == n - 1)

    def _eval_step(self, batch: Any, stage: str, batch_idx: int) -> dict[str, Any]:
        x = self.unpack_batch(batch)
        terms, out = self.compute_terms(x, n_samples=1, where=lambda: f"{stage} batch {batch_idx}")
        n = x.shape[0]
        self._eval_losses.append((batch_idx, terms.loss.detach()))
        for term in _EVAL_TERMS:
            metric = self._metric(f"{stage}_{term}")
            # The batch mean once per example: weighted by the batch size with no host-to-device copy of a
            # weight (and right whatever torchmetrics does with `weight` under nan_strategy="disable").
            metric.update(getattr(terms, term).reshape(1).expand(n))
            self.log(f"{stage}/{term}", metric, prog_bar=term == "elbo")
        if self.n_eval_samples > 1:
            # The same chunked estimator as ImportanceWeightedNLL: memory bounded by iw_chunk_size for any k.
            nll_values = iw_nll(self, x, n_samples=self.n_eval_samples, chunk_size=self.iw_chunk_size)
            nll = self._metric(f"{stage}_nll_iw")
            nll.update(nll_values)  # one value per example
            self.log(f"{stage}/nll_iw", nll)
        return {"loss": terms.loss, "posterior": out.posterior, "z": out.z[0], "kl_per_dim": terms.kl_per_dim}

    def _metric(self, name: str) -> MeanMetric:
        metric = self.eval_metrics[name]
        assert isinstance(metric, MeanMetric)
        return metric

    def _reset_eval_metrics(self, stage: str) -> None:
        # States left by a run under inference mode (trainer.validate) cannot be updated in place by a
        # later run under no_grad (validation inside fit); a reset at the start rebuilds them as normal tensors.
        for name in self.eval_metrics:
            if name.startswith(f"{stage}_"):
                self._metric(name).reset()

    def on_validation_epoch_start(self) -> None:
        self._reset_eval_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._reset_eval_metrics("test")

    def on_validation_epoch_end(self) -> None:
        self._check_eval_losses("val")
        self._log_bits_per_dim("val")

    def on_test_epoch_end(self) -> None:
        self._check_eval_losses("test")
        self._log_bits_per_dim("test")

    def _check_eval_losses(self, stage: str) -> None:
        """Non-finite evaluation batches: an error under ``on_nonfinite="raise"``, a warning under ``"skip"``.

        Either way the epoch's means include them (NaN), so a bad batch never makes a value look better.
        """
        losses, self._eval_losses = self._eval_losses, []
        if not losses or self._trainer is not None and self.trainer.sanity_checking:
            return
        finite = torch.isfinite(torch.stack([loss.float() for _, loss in losses])).tolist()
        bad = [batch_idx for (batch_idx, _), ok in zip(losses, finite) if not ok]
        if not bad:
            return
        message = (
            f"{stage}: {len(bad)} of {len(losses)} batches had a non-finite loss (batch indices {bad[:10]}); "
            f"the {stage}/ epoch values are NaN. Check those batches for NaN/inf data, or the model for "
            "non-finite outputs."
        )
        if self.guard.policy == "raise":
            raise NonFiniteError(message)
        rank_zero_warn(message)

    def _log_bits_per_dim(self, stage: str) -> None:
        # The best NLL estimate available: importance-weighted when n_eval_samples > 1, else -ELBO (an upper bound).
        if self.data_shape is None:
            return
        key = "nll_iw" if self.n_eval_samples > 1 else "elbo"
        metric = self._metric(f"{stage}_{key}")
        if not metric.update_called:
            return
        nats = metric.compute() if key == "nll_iw" else -metric.compute()
        # The metric is already reduced across ranks; sync_dist only states that the value is global.
        self.log(f"{stage}/bits_per_dim", bits_per_dim(nats, math.prod(self.data_shape)), sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test", batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The posterior mean of each example, shape ``(B, D)``."""
        return self.encode(self.unpack_batch(batch)).mean

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
