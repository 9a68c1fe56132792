"""What callbacks, metrics and views need of a module, as ``typing.Protocol``s, and one helper that checks them.

A callback works on any LightningModule that keeps the protocol it names: ``VAE`` keeps all of them, a user's
own module only the ones it uses. :func:`require` checks a module against a protocol and says, in one
``TypeError``, what is missing and who needs it.

- :class:`Annealable` (attributes ``beta``, ``free_bits``, ``capacity``): the annealing, free-bits, capacity and
  target-rate callbacks; :class:`SupportsFreeBitsMode` (``free_bits_mode``, ``free_bits_groups``) and
  :class:`SupportsCapacityGamma` (``capacity_gamma``) add what ``FreeBits`` and ``CapacityAnnealing`` set when asked.
- :class:`SupportsLogJoint` (``encode(x)``, ``log_joint(x, z)``): ``ImportanceWeightedNLL`` and ``iw_nll``.
- :class:`SupportsLogWeights` (``log_weights(x, s)``): the same, on the full joint of a hierarchical model.
- :class:`SupportsViews` (``sample(n)``, ``reconstruct(x)``, ``encode(x)``, ``decode(z)``): the image, traversal,
  latent and embedding views.
- :class:`SupportsTrainingLoss` (``encoder``, ``decoder``, ``training_loss(batch)``, ``encode(x)``): aggressive
  encoder training.
- :class:`MonitorOutputs`: what ``validation_step`` / ``test_step`` return for the posterior-collapse monitor.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict, runtime_checkable

from torch import Tensor, nn
from torch.distributions import Distribution


@runtime_checkable
class Annealable(Protocol):
    """The annealing protocol: values a callback may set between training steps; the loss reads them each step."""

    beta: float
    free_bits: float
    capacity: float | None


@runtime_checkable
class SupportsFreeBitsMode(Annealable, Protocol):
    """The annealing protocol and how free bits are counted: ``"dim"``, ``"group"``, ``"total"``, ``"latent_group"``."""

    free_bits_mode: str
    free_bits_groups: int


@runtime_checkable
class SupportsGroupBetas(Protocol):
    """Weights of chosen latent groups' KL in place of β, set between steps (``KLAnnealing(group=...)``)."""

    group_betas: dict[str, float]


@runtime_checkable
class SupportsCapacityGamma(Annealable, Protocol):
    """The annealing protocol and γ, the weight of ``|KL - C|`` in the capacity objective."""

    capacity_gamma: float


@runtime_checkable
class SupportsLogJoint(Protocol):
    """What the importance-weighted NLL needs of a model: ``encode`` and ``log_joint``."""

    def encode(self, x: Tensor) -> Distribution:
        """q(z|x) with batch shape ``(B,)`` and event shape ``(D,)``."""

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x, z)`` of shape ``(S, B)`` for latents ``z`` of shape ``(S, B, D)``."""


@runtime_checkable
class SupportsLogWeights(Protocol):
    """A model whose importance weights cover every latent group: ``log p(x, z) - log q(z | x)``, ``(s, B)``."""

    def log_weights(self, x: Tensor, n_samples: int) -> Tensor:
        """``n_samples`` log-weights per example, every group drawn from its posterior."""


@runtime_checkable
class SupportsViews(Protocol):
    """What the image views need: draw from the model, reconstruct data, encode data."""

    def sample(self, n: int) -> Tensor:
        """``n`` examples in data space."""

    def reconstruct(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x`` in data space."""

    def encode(self, x: Tensor) -> Distribution:
        """q(z|x)."""

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's output (the likelihood's parameters) for latents ``z``."""


@runtime_checkable
class SupportsTrainingLoss(Protocol):
    """What aggressive encoder training needs: the networks, the loss of a batch, and ``encode``."""

    encoder: nn.Module
    decoder: nn.Module

    def training_loss(self, batch: Any) -> Tensor:
        """The loss ``training_step`` minimises on ``batch``."""

    def encode(self, x: Tensor) -> Distribution:
        """q(z|x)."""


class MonitorOutputs(TypedDict, total=False):
    """What ``validation_step`` / ``test_step`` return for the posterior-collapse monitor.

    ``posterior``, ``z`` and ``kl_per_dim`` are those of the first latent group; ``groups`` maps every group's
    name to its own ``{"posterior", "z", "kl_per_dim"}`` (one entry for a single-group model).
    """

    loss: Tensor
    posterior: Distribution
    z: Tensor
    kl_per_dim: Tensor | None
    groups: dict[str, dict[str, Any]]


def _members(protocol: type) -> tuple[list[str], list[str]]:
    """The attribute names and method names a protocol declares (its own and its bases', not ``object``'s)."""
    attributes: list[str] = []
    methods: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass in (object, Protocol) or klass.__module__ == "typing":
            continue
        attributes += [name for name in getattr(klass, "__annotations__", {}) if name not in attributes]
        methods += [
            name
            for name, value in vars(klass).items()
            if callable(value) and not name.startswith("_") and name not in methods
        ]
    return attributes, methods


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks (methods must be callable), in declaration order.

    Example::

        >>> class Module:
        ...     beta, free_bits = 1.0, 0.0
        >>> missing_members(Module(), Annealable)
        ['capacity']
    """
    attributes, methods = _members(protocol)
    missing = [name for name in attributes if not hasattr(obj, name)]
    return missing + [name for name in methods if not callable(getattr(obj, name, None))]


#: What each protocol is, in the words of the README (the class names are for code; messages use these).
PURPOSE: dict[str, str] = {
    "Annealable": "the annealing attributes `beta`, `free_bits` and `capacity`, values callbacks set between "
    'training steps and the module\'s loss reads at every step (README: "Any module")',
    "SupportsFreeBitsMode": "the free-bits attributes `free_bits`, `free_bits_mode` and `free_bits_groups`, which "
    "the module's loss reads at every step",
    "SupportsCapacityGamma": "the capacity attributes `capacity` and `capacity_gamma` (loss = recon + "
    "capacity_gamma * |KL - capacity|), which the module's loss reads at every step",
    "SupportsGroupBetas": "`group_betas`, the KL weight of chosen latent groups, read by the loss at every step",
    "SupportsLogJoint": "`encode(x)` (q(z|x)) and `log_joint(x, z)` (log p(x, z)), to estimate log p(x)",
    "SupportsLogWeights": "`log_weights(x, n_samples)`, the importance weights of every latent group",
    "SupportsViews": "`sample(n)`, `reconstruct(x)`, `encode(x)` and `decode(z)`, to draw the views",
    "SupportsTrainingLoss": "`encoder`, `decoder`, `training_loss(batch)` and `encode(x)`, to train the encoder alone",
}


def _names(names: list[str]) -> str:
    quoted = [f"`{name}`" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


def require(obj: Any, protocol: type, user: str, members: tuple[str, ...] | None = None) -> None:
    """Check that ``obj`` keeps ``protocol`` (or only its ``members``) for ``user`` (a callback or function name).

    Raises:
        TypeError: Naming the user, what it needs and why, the module's class, everything it lacks for ``user``
            and the rest of the protocol it lacks (what the other callbacks of the kind would ask for next).

    Example::

        >>> class Module:
        ...     beta = 1.0
        >>> require(Module(), Annealable, "KLAnnealing", members=("beta",))
        >>> require(Module(), Annealable, "FreeBits", members=("free_bits",))  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        TypeError: FreeBits needs `free_bits` on the module, and Module has no `free_bits`. FreeBits works with any
        LightningModule that has the annealing attributes `beta`, `free_bits` and `capacity`, values callbacks set
        between training steps and the module's loss reads at every step (README: "Any module"). Module also lacks
        `capacity`, which other callbacks of this kind set.
    """
    all_missing = missing_members(obj, protocol)
    needed = [name for group in _members(protocol) for name in group]
    if members is not None:
        unknown = [name for name in members if name not in needed]
        if unknown:
            raise ValueError(f"Expected `members` to be members of {protocol.__name__} {needed}, got {unknown}")
        needed = [name for name in needed if name in members]
    missing = [name for name in all_missing if name in needed]
    if not missing:
        return
    cls = type(obj).__name__
    purpose = PURPOSE.get(protocol.__name__, f"the members of {protocol.__name__}")
    message = (
        f"{user} needs {_names(needed)} on the module, and {cls} has no {_names(missing)}. {user} works with any "
        f"LightningModule that has {purpose}."
    )
    others = [name for name in all_missing if name not in needed]
    if others:
        message += f" {cls} also lacks {_names(others)}, which other callbacks of this kind set."
    raise TypeError(message)


__all__ = [
    "Annealable",
    "MonitorOutputs",
    "SupportsCapacityGamma",
    "SupportsFreeBitsMode",
    "SupportsGroupBetas",
    "SupportsLogJoint",
    "SupportsLogWeights",
    "SupportsTrainingLoss",
    "SupportsViews",
    "PURPOSE",
    "missing_members",
    "require",
]
