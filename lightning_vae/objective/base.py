"""The objective contract: what an objective takes, what it returns, and the facts of the run it may read.

An objective is an :class:`Objective` (an ``nn.Module``, so it may hold parameters and state of its own). The
training module hands it the model, the batch (data and context) and, per step, whether this step's values reach
the loggers; it returns :class:`~lightning_vae.objective.terms.ELBOTerms`: the loss, the reconstruction and KL terms
every monitor reads, and any further named terms in ``extra`` (logged as ``train/<name>`` and ``val/<name>``).

Adding one is one file::

    class MyObjective(Objective, name="my_objective"):
        weights = ("gamma",)          # what annealing callbacks may set (weight="gamma")

        def __init__(self, gamma: float = 1.0) -> None:
            super().__init__()
            self.gamma = gamma

        def forward(self, model, batch, out, report):
            ...                       # out: the model's ModelOutput for batch.x (and batch.context)
            return ELBOTerms(...)

and ``VAE(objective=MyObjective())``, ``--model.objective.class_path=...`` (LightningCLI) or a Hydra
``model.objective._target_``. A name given with ``name=`` also selects it as ``VAE(objective="my_objective")``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn

from lightning_vae.checks import check_float
from lightning_vae.data.common import Batch
from lightning_vae.distributions.posteriors import diagonal_gaussian_params
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.objective.terms import ELBOTerms

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lightning.pytorch import LightningModule
    from torch.optim import Optimizer

#: Objectives that have a name, by name (filled as their classes are defined).
OBJECTIVES: dict[str, type[Objective]] = {}


@dataclass(frozen=True)
class RunFacts:
    """Facts of the run an objective may need, set by the training module when fitting starts.

    Attributes:
        dataset_size: Examples in the training set over all processes (β-TCVAE's estimators need it), or
            ``None`` when the data do not tell (an iterable dataset).
        world_size: Processes training together.
    """

    dataset_size: int | None = None
    world_size: int = 1


def model_pass(model: LatentVariableModel, batch: Batch, n_samples: int) -> ModelOutput:
    """One pass of ``model`` on ``batch``: ``n_samples`` samples of every latent group, and the generation from them.

    A model that declares ``conditional = True`` receives the batch's context; any other model sees ``x`` alone.
    """
    if getattr(model, "conditional", False):
        return model(batch.x, n_samples, context=batch.context)  # type: ignore[no-any-return]
    return model(batch.x, n_samples)  # type: ignore[no-any-return]


class Objective(HyperparametersMixin, nn.Module, ABC):
    """An objective: the loss a :class:`~lightning_vae.VAE` minimises, and the named terms it reports.

    Subclasses implement :meth:`forward`; they may override :meth:`training_terms` (a faster form for models that
    qualify), :meth:`setup` (read the run's facts), :meth:`check_model` (refuse a model they cannot train) and
    :meth:`state` / :meth:`load_state` (values set during training that a checkpoint must restore). Calling
    ``self.save_hyperparameters()`` in ``__init__`` (as the built-in objectives do) lets a checkpoint rebuild the
    objective alone.

    An objective with parameters trained by an optimizer of its own (FactorVAE's discriminator) sets
    :attr:`manual_optimization`: the training module then turns Lightning's automatic optimization off, builds the
    model's optimizer over every parameter but those :meth:`configure_optimizers` claims, and after each training
    step's terms calls :meth:`manual_step`, which runs the backward pass and steps every optimizer.

    Attributes:
        weights: Names of the attributes that annealing callbacks may set between steps (``KLAnnealing(weight=...)``).
        n_samples: Samples of every latent group the model draws per example for this objective.
        manual_optimization: Whether the objective steps the optimizers itself (:meth:`manual_step`).
        facts: The run's :class:`RunFacts` (after :meth:`setup`).
    """

    weights: ClassVar[tuple[str, ...]] = ()
    manual_optimization: ClassVar[bool] = False
    n_samples: int = 1

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            OBJECTIVES[name] = cls

    def __init__(self) -> None:
        super().__init__()
        self.facts = RunFacts()

    def setup(self, facts: RunFacts) -> None:
        """Receive the run's facts (called when fitting starts, on every process)."""
        self.facts = facts

    def check_model(self, model: LatentVariableModel) -> None:
        """Refuse a model this objective cannot train, with a ``ValueError`` that says why (default: accept any)."""

    @abstractmethod
    def forward(self, model: LatentVariableModel, batch: Batch, out: ModelOutput, report: bool) -> ELBOTerms:
        """The loss and terms for one pass ``out`` of ``model`` on ``batch``.

        Args:
            model: The latent-variable model (its likelihood turns ``out.generative.params`` into ``log p(x|z)``).
            batch: The batch's data ``x`` and ``context``.
            out: The model's pass with :attr:`n_samples` samples of every group.
            report: Whether this step's values reach the loggers; ``False`` lets the objective compute the loss
                alone (the reported fields of :class:`ELBOTerms` may then be ``None``).
        """

    def training_terms(self, model: LatentVariableModel, batch: Batch, report: bool, check: bool) -> ELBOTerms:
        """The terms of one training step: the model's pass, then :meth:`forward`.

        ``check`` asks to check the decoder's output against the data (on the steps the data check runs).
        """
        out = model_pass(model, batch, self.n_samples)
        if check:
            model.likelihood.check_params(batch.x, out.generative.params, sample_dims=1)
        return self(model, batch, out, report)

    def configure_optimizers(self) -> list[Optimizer]:
        """The optimizers of the objective's own parameters (with :attr:`manual_optimization`; default: none).

        The training module puts them after the model's optimizer (``module.optimizers()[1:]``), and Lightning
        checkpoints and restores all of them.
        """
        return []

    def manual_step(self, module: LightningModule, terms: ELBOTerms) -> dict[str, Tensor]:
        """Backward and step every optimizer for one training step's ``terms`` (with :attr:`manual_optimization`).

        Use ``module.manual_backward`` (it scales the loss under 16-bit mixed precision) and each optimizer's
        ``step()`` (Lightning's: it unscales the gradients, then calls :meth:`before_optimizer_step`, where clipping
        belongs); the optimizers are ``module.optimizers()``.

        Returns:
            Further named scalars of the step, logged as ``train/<name>`` with the terms' ``extra``.
        """
        raise NotImplementedError(f"{type(self).__name__} sets manual_optimization but has no manual_step")

    def before_optimizer_step(self, module: LightningModule, optimizer: Optimizer) -> None:
        """Before each optimizer steps in :meth:`manual_step`, its gradients unscaled (16-bit mixed precision): the
        place to clip them, with ``module.clip_gradients(optimizer, ...)`` (default: nothing)."""

    def state(self) -> dict[str, Any]:
        """The values a checkpoint records beside the weights (those callbacks set during training)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint; values are checked as where they are set."""


class WeightedObjective(Objective):
    """An :class:`Objective` whose :attr:`~Objective.weights` are non-negative floats that a checkpoint keeps.

    Each weight is checked wherever it is set (at construction, and by annealing callbacks between steps);
    :meth:`state` records every weight and :meth:`load_state` restores those a checkpoint holds.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.weights:  # annealing callbacks set them between steps: checked as at construction
            value = check_float(name, value, low=0.0)
        super().__setattr__(name, value)

    def state(self) -> dict[str, Any]:
        """Every weight by name."""
        return {name: getattr(self, name) for name in self.weights}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Set the weights ``state`` holds (each checked as at construction)."""
        for name in self.weights:
            if name in state:
                setattr(self, name, state[name])


class GaussianCodes(NamedTuple):
    """One diagonal-Gaussian latent group of a pass: one sample per example, the posterior's and the prior's
    parameters (what the disentangling objectives read)."""

    #: One sample per example ``(B, D)``.
    z: Tensor
    #: Posterior means ``(B, D)``.
    loc: Tensor
    #: Posterior log-variances ``(B, D)``.
    log_var: Tensor
    #: The prior's means and log-variances, broadcastable to ``(D,)``.
    prior_loc: Tensor
    prior_log_var: Tensor


def check_single_gaussian_group(objective: str, model: LatentVariableModel) -> None:
    """Refuse a model with more than one latent group, naming ``objective``."""
    if len(model.group_names) != 1:
        raise ValueError(
            f"Expected a model with one latent group for {objective}, got the groups {list(model.group_names)}"
        )


def gaussian_codes(objective: str, out: ModelOutput) -> GaussianCodes:
    """The codes of a one-group pass whose posterior and prior are diagonal Gaussians.

    Raises:
        ValueError: For several groups or samples, or a posterior or prior that is not a diagonal Gaussian (its
            message names ``objective``).
    """
    inference, generative = out
    names = list(inference.posteriors)
    if len(names) != 1:
        raise ValueError(f"Expected one latent group for {objective}, got {names}")
    name = names[0]
    z = inference.z[name]
    if z.dim() != 3 or z.shape[0] != 1:
        raise ValueError(f"Expected one sample per example (1, B, D) for {objective}, got {tuple(z.shape)}")
    q = diagonal_gaussian_params(inference.posteriors[name])
    p = diagonal_gaussian_params(generative.priors[name])
    if q is None or p is None:
        raise ValueError(
            f"Expected a diagonal Gaussian posterior and prior for {objective}, got "
            f"{type(inference.posteriors[name]).__name__} and {type(generative.priors[name]).__name__}"
        )
    p_loc, p_log_var = p
    if p_loc.dim() > 1:  # a prior with a batch shape (a learned one broadcast over the batch): one row suffices
        p_loc, p_log_var = p_loc.reshape(-1, p_loc.shape[-1])[0], p_log_var.reshape(-1, p_log_var.shape[-1])[0]
    return GaussianCodes(z[0], q[0], q[1], p_loc, p_log_var)


def make_objective(objective: str | Objective) -> Objective:
    """An :class:`Objective` from its name, or the one given.

    Raises:
        TypeError: For anything but a name or an :class:`Objective`.
        ValueError: For an unknown name (the message lists the known ones).

    Example::

        >>> type(make_objective("iwae")).__name__
        'IWAE'
    """
    if isinstance(objective, Objective):
        return objective
    if not isinstance(objective, str):
        raise TypeError(f"Expected `objective` to be a name or a lightning_vae.objective.Objective, got {objective!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"Expected `objective` to be one of {sorted(OBJECTIVES)} or an Objective, got {objective!r}")
    return OBJECTIVES[objective]()


__all__ = [
    "OBJECTIVES",
    "GaussianCodes",
    "Objective",
    "RunFacts",
    "WeightedObjective",
    "check_single_gaussian_group",
    "gaussian_codes",
    "make_objective",
    "model_pass",
]
