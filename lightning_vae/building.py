"""Describing and rebuilding networks from ``class_path`` / ``init_args`` descriptions, safely.

A checkpoint or a config names classes by dotted path (``{"class_path": "lightning_vae.nets.MLPEncoder",
"init_args": {...}}``). Rebuilding them must never run code the file chose: :func:`resolve_class` imports
the named module, checks that the name is a *class* deriving from the base the slot expects (an
``nn.Module`` for a network, a ``Likelihood``, a ``Prior``, a ``LightningDataModule``, an optimizer), and
only then may the caller construct it. A function (``os.system``), a builtin (``builtins.open``) or any
class outside the allowed bases is refused with a ``ValueError`` that names the path, before any call.

:func:`check_checkpoint_classes` walks a checkpoint's hyperparameters
and checks every class it names, so a hostile checkpoint is refused before Lightning or jsonargparse
instantiate anything from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import nn

#: Keys of a ``VAE``'s hyperparameters that name a network, and the base class each must derive from.
NETWORK_KEYS = ("encoder", "decoder", "model")


def _allowed_bases(slot: str) -> tuple[type, ...]:
    from lightning.pytorch import LightningDataModule

    from lightning_vae.distributions.likelihoods import Likelihood
    from lightning_vae.distributions.priors import Prior

    if slot == "likelihood":
        return (Likelihood,)
    if slot == "prior":
        return (Prior,)
    if slot == "data":
        return (LightningDataModule,)
    if slot == "objective":
        from lightning_vae.objective.base import Objective

        return (Objective,)
    if slot == "optimizer":
        return (torch.optim.Optimizer,)
    if slot == "lr_scheduler":
        return (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if slot in _LIGHTNING_SLOTS:
        return _lightning_bases(slot)
    if slot.startswith("hydra_"):
        return _hydra_bases(slot)
    return (nn.Module,)


def _hydra_bases(slot: str) -> tuple[type, ...]:
    if slot == "hydra_sampler":  # hydra-optuna-sweeper's sampler: an Optuna sampler
        try:
            from optuna.samplers import BaseSampler
        except ImportError:
            return ()
        return (BaseSampler,)
    from hydra.experimental.callback import Callback
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.plugin import Plugin
    from hydra.plugins.sweeper import Sweeper

    bases: dict[str, tuple[type, ...]] = {
        "hydra_callback": (Callback,),
        "hydra_launcher": (Launcher,),
        "hydra_sweeper": (Sweeper,),
    }
    return bases.get(slot, (Plugin,))


#: Slots filled by Lightning's own classes (in a Hydra config): the module, the trainer and its parts.
_LIGHTNING_SLOTS = ("model", "trainer", "callback", "logger", "strategy", "plugin", "profiler", "accelerator")


def _lightning_bases(slot: str) -> tuple[type, ...]:
    from lightning.pytorch import Callback, LightningModule, Trainer
    from lightning.pytorch.accelerators import Accelerator
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.plugins import CheckpointIO, ClusterEnvironment, LayerSync, Precision
    from lightning.pytorch.profilers import Profiler
    from lightning.pytorch.strategies import Strategy

    bases: dict[str, tuple[type, ...]] = {
        "model": (LightningModule,),
        "trainer": (Trainer,),
        "callback": (Callback,),
        "logger": (Logger,),
        "strategy": (Strategy,),
        "plugin": (Precision, CheckpointIO, ClusterEnvironment, LayerSync),
        "profiler": (Profiler,),
        "accelerator": (Accelerator,),
    }
    return bases[slot]


def _base_names(bases: Sequence[type]) -> str:
    return " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)


def resolve_class(class_path: Any, slot: str) -> type:
    """Import ``class_path`` and check it is a class that may fill ``slot``; nothing is called.

    Args:
        class_path: Dotted path such as ``"lightning_vae.nets.MLPEncoder"``.
        slot: What the class is for: ``"encoder"``, ``"decoder"`` (or any other network slot, which must be
            an ``nn.Module``), ``"likelihood"``, ``"prior"``, ``"data"``, ``"optimizer"`` or ``"lr_scheduler"``;
            in Hydra configs also ``"model"`` (a ``LightningModule``), ``"trainer"``, ``"callback"``,
            ``"logger"``, ``"strategy"``, ``"plugin"``, ``"profiler"`` and ``"accelerator"`` (Lightning's bases),
            and in a Hydra config's own section ``"hydra_callback"``, ``"hydra_launcher"``, ``"hydra_sweeper"``,
            ``"hydra_sampler"`` (an Optuna sampler) and ``"hydra_part"`` (any other entry there: a Hydra plugin).

    Raises:
        ValueError: If the path cannot be imported, is not a class, or is not a subclass of the slot's base.

    Example::

        >>> resolve_class("lightning_vae.nets.MLPEncoder", "encoder").__name__
        'MLPEncoder'
        >>> resolve_class("os.system", "encoder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected `encoder` to name a subclass of torch.nn...Module, got 'os.system' ...; refused ...
    """
    if not isinstance(class_path, str) or "." not in class_path:
        raise ValueError(
            f"Expected `{slot}` class_path to be a dotted path such as 'package.module.Class', got {class_path!r}"
        )
    module_name, _, name = class_path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"Cannot import the `{slot}` class {class_path!r}: {err}") from err
    bases = _allowed_bases(slot)
    if not (isinstance(obj, type) and issubclass(obj, bases)):
        raise ValueError(
            f"Expected `{slot}` to name a subclass of {_base_names(bases)}, got {class_path!r} "
            f"(a {type(obj).__name__}); refused without calling it"
        )
    return obj


def build(spec: Any, slot: str) -> Any:
    """Construct a ``{"class_path": ..., "init_args": {...}}`` description; anything else passes through.

    The class is resolved and checked by :func:`resolve_class` before it is called. Nested descriptions
    inside ``init_args`` (e.g. an activation given as ``{"class_path": "torch.nn.Tanh"}``) are built too,
    each checked to be an ``nn.Module``.

    Raises:
        ValueError: If a class_path is refused (see :func:`resolve_class`).
        TypeError: If ``init_args`` is not a mapping.
    """
    if not (isinstance(spec, Mapping) and "class_path" in spec):
        return spec
    cls = resolve_class(spec["class_path"], slot)
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise TypeError(f"Expected `{slot}.init_args` to be a mapping, got {type(init_args).__name__}")
    kwargs = {key: build(value, f"{slot}.{key}") for key, value in init_args.items()}
    return cls(**kwargs)


def describe(module: Any) -> dict[str, Any] | None:
    """A ``class_path``/``init_args`` description of a module that recorded its arguments, else ``None``.

    Modules that call ``self.save_hyperparameters()`` (Lightning's ``HyperparametersMixin``, as the built-in
    networks do) can be described, and so rebuilt from a checkpoint alone.
    """
    from lightning.pytorch import LightningModule

    if isinstance(module, HyperparametersMixin) and not isinstance(module, LightningModule):
        cls = type(module)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(module.hparams)}
    return None


def describe_all(arguments: Mapping[str, Any]) -> dict[str, Any] | None:
    """``arguments`` with every module replaced by its :func:`describe` description; ``None`` when a module cannot
    be described (a model records all of its arguments or none).

    Example::

        >>> from torch import nn
        >>> describe_all({"n": 3}), describe_all({"n": 3, "net": nn.Linear(2, 2)})
        ({'n': 3}, None)
    """
    described = {}
    for name, value in arguments.items():
        if isinstance(value, nn.Module):
            value = describe(value)
            if value is None:
                return None
        described[name] = value
    return described


def save_hparams(module: Any, frame: Any, modules: Mapping[str, Any], factories: Mapping[str, Any]) -> None:
    """Save a LightningModule's ``__init__`` arguments so a checkpoint rebuilds it alone, never pickling a module.

    ``modules`` maps argument names to what was passed (an ``nn.Module``, a ``Likelihood`` or a name); a module is
    saved as its :func:`describe` description, or left out when it cannot be described (a checkpoint then needs
    it passed again). ``factories`` maps the optimizer/scheduler arguments to what was passed: callables are left
    out (LightningCLI records them in its own config). Under LightningCLI (whose parsed config carries the
    ``_instantiator`` key) the whole config is kept, where every network is a ``class_path``/``init_args`` dict.

    Args:
        module: The LightningModule.
        frame: The frame of its ``__init__`` (``inspect.currentframe()`` there).
        modules: Argument name -> value, for the arguments that may hold modules.
        factories: Argument name -> value, for the optimizer and scheduler arguments.
    """
    ignore = [name for name, value in modules.items() if isinstance(value, nn.Module)]
    ignore += [name for name, value in factories.items() if not isinstance(value, Mapping)]
    module.save_hyperparameters(ignore=ignore, frame=frame)
    if "_instantiator" in module.hparams:
        module.save_hyperparameters(frame=frame)
        return
    extra = {name: d for name, value in modules.items() if (d := describe(value)) is not None}
    if extra:
        module.save_hyperparameters({**dict(module.hparams), **extra})


def _slot_of(path: str) -> str:
    top = path.split(".", 1)[0]
    if path == top and top in ("likelihood", "prior", "data", "objective", "optimizer", "lr_scheduler"):
        return top
    return "network"  # nested entries (e.g. an encoder's activation) must be modules


def check_checkpoint_classes(hparams: Mapping[str, Any], source: str = "the checkpoint") -> None:
    """Check every class a checkpoint's hyperparameters name, without calling any.

    ``class_path`` entries must resolve to the base of their slot (:func:`resolve_class`); the callable
    slots ``optimizer`` and ``lr_scheduler``, which jsonargparse would also resolve from a bare dotted
    string, must name an optimizer or scheduler class; ``compile`` may hold only the settings of
    :data:`COMPILE_FROM_FILES`. Lightning's ``_instantiator`` entry is left to Lightning's own allowlist.

    Raises:
        ValueError: Naming ``source``, the key and the refused path.
    """

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            if "class_path" in value:
                try:
                    resolve_class(value["class_path"], _slot_of(path) if path else "network")
                except ValueError as err:
                    raise ValueError(f"{source}: hyperparameter `{path}`: {err}") from None
            for key, item in value.items():
                if key != "class_path":
                    walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")

    if "compile" in hparams:
        check_compile_options(hparams["compile"], source)
    for key in ("optimizer", "lr_scheduler"):
        value = hparams.get(key)
        if isinstance(value, str):
            try:
                resolve_class(value, key)
            except ValueError as err:
                raise ValueError(f"{source}: hyperparameter `{key}`: {err}") from None
    walk(dict(hparams), "")


#: The ``torch.compile`` arguments a file (checkpoint, LightningCLI or Hydra config) may set, and their values.
#: Everything else (``options``: inductor settings such as the C++ compiler it runs; other backends) reaches a
#: compiler or a launcher, so only code may pass it (``VAE(compile={...})``).
COMPILE_FROM_FILES: dict[str, tuple[Any, ...]] = {
    "fullgraph": (True, False),
    "dynamic": (True, False, None),
    "mode": (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "backend": ("inductor", "eager", "aot_eager", "cudagraphs"),
    "disable": (True, False),
}


def check_compile_options(value: Any, source: str = "the config") -> None:
    """Refuse ``compile`` settings read from a file beyond :data:`COMPILE_FROM_FILES`.

    ``true``/``false``/``null`` pass; a mapping may hold only the whitelisted keys, each with a listed value.

    Raises:
        ValueError: Naming ``source``, the key and what is allowed.

    Example::

        >>> check_compile_options({"mode": "max-autotune", "fullgraph": True})
        >>> check_compile_options({"options": {"cpp.cxx": ["sh", "payload.sh"]}}, "last.ckpt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: last.ckpt: `compile` may set only fullgraph, dynamic, mode, backend, disable..., got 'options'...
    """
    if value is None or isinstance(value, bool):
        return
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{source}: Expected `compile` to be true, false or a mapping of torch.compile arguments, got {value!r}"
        )
    allowed = ", ".join(COMPILE_FROM_FILES)
    for key, item in value.items():
        if key not in COMPILE_FROM_FILES:
            raise ValueError(
                f"{source}: `compile` may set only {allowed} when it comes from a file, got {key!r} (settings that "
                "reach a compiler or a launcher are taken from code only: VAE(compile={...})); refused"
            )
        if not any(item is v or (type(item) is type(v) and item == v) for v in COMPILE_FROM_FILES[key]):
            raise ValueError(
                f"{source}: Expected `compile.{key}` to be one of {COMPILE_FROM_FILES[key]} when it comes from a "
                f"file, got {item!r}; refused"
            )


__all__ = [
    "COMPILE_FROM_FILES",
    "build",
    "check_checkpoint_classes",
    "check_compile_options",
    "describe",
    "describe_all",
    "resolve_class",
    "save_hparams",
]
