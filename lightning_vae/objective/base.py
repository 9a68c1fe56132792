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
from typing import TYPE_CHECKING, Any, ClassVar

from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import nn

from lightning_vae.data.common import Batch
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.objective.terms import ELBOTerms

if TYPE_CHECKING:
    from collections.abc import Mapping

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

    Attributes:
        weights: Names of the attributes that annealing callbacks may set between steps (``KLAnnealing(weight=...)``).
        n_samples: Samples of every latent group the model draws per example for this objective.
        facts: The run's :class:`RunFacts` (after :meth:`setup`).
    """

    weights: ClassVar[tuple[str, ...]] = ()
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

    def state(self) -> dict[str, Any]:
        """The values a checkpoint records beside the weights (those callbacks set during training)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint; values are checked as where they are set."""


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


__all__ = ["OBJECTIVES", "Objective", "RunFacts", "make_objective", "model_pass"]
