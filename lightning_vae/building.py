"""Describing and rebuilding networks from ``class_path`` / ``init_args`` descriptions, safely.

A checkpoint or a config names classes by dotted path (``{"class_path": "lightning_vae.nets.MLPEncoder",
"init_args": {...}}``). Rebuilding them must never run code the file chose: :func:`resolve_class` imports
the named module, checks that the name is a *class* deriving from the base the slot expects (an
``nn.Module`` for a network, a ``Likelihood``, a ``Prior``, a ``LightningDataModule``, an optimizer), and
only then may the caller construct it. A function (``os.system``), a builtin (``builtins.open``) or any
class outside the allowed bases is refused with a ``ValueError`` that names the path, before any call.

:func:`load_checkpoint` reads a checkpoint with ``torch.load(weights_only=True)`` (no unpickling of
arbitrary objects) and turns a missing, empty, truncated or foreign file into a ``ValueError`` that names
the file and what is wrong with it. :func:`check_checkpoint_classes` walks a checkpoint's hyperparameters
and checks every class it names, so a hostile checkpoint is refused before Lightning or jsonargparse
instantiate anything from it.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import nn

#: Keys of a ``VAE``'s hyperparameters that name a network, and the base class each must derive from.
NETWORK_KEYS = ("encoder", "decoder", "model")


def _allowed_bases(slot: str) -> tuple[type, ...]:
    from lightning.pytorch import Callback, LightningDataModule
    from lightning.pytorch.loggers import Logger

    from lightning_vae.distributions.likelihoods import Likelihood
    from lightning_vae.distributions.priors import Prior

    if slot == "likelihood":
        return (Likelihood,)
    if slot == "prior":
        return (Prior,)
    if slot == "data":
        return (LightningDataModule,)
    if slot == "callback":
        return (Callback,)
    if slot == "logger":
        return (Logger,)
    if slot == "optimizer":
        return (torch.optim.Optimizer,)
    if slot == "lr_scheduler":
        return (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    return (nn.Module,)


def _base_names(bases: Sequence[type]) -> str:
    return " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)


def resolve_class(class_path: Any, slot: str) -> type:
    """Import ``class_path`` and check it is a class that may fill ``slot``; nothing is called.

    Args:
        class_path: Dotted path such as ``"lightning_vae.nets.MLPEncoder"``.
        slot: What the class is for: ``"encoder"``, ``"decoder"`` (or any other network slot, which must be
            an ``nn.Module``), ``"likelihood"``, ``"prior"``, ``"data"``, ``"optimizer"``, ``"lr_scheduler"``,
            ``"callback"`` or ``"logger"``.

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


#: Top-level children of the training module whose parameters now live under its ``model``.
_MODEL_CHILDREN = ("encoder.", "decoder.", "likelihood.", "prior.")


def migrate_state_dict(checkpoint: dict[str, Any]) -> None:
    """Rename the weights of a checkpoint written when the networks were children of the training module.

    ``encoder.*``, ``decoder.*``, ``likelihood.*`` and ``prior.*`` become ``model.encoder.*`` and so on (in
    place); a checkpoint already in the new layout is left as it is.
    """
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or any(key.startswith("model.") for key in state):
        return
    if any(key.startswith(_MODEL_CHILDREN) for key in state):
        checkpoint["state_dict"] = {
            (f"model.{key}" if key.startswith(_MODEL_CHILDREN) else key): value for key, value in state.items()
        }


def _slot_of(path: str) -> str:
    top = path.split(".", 1)[0]
    if path == top and top in ("likelihood", "prior", "data", "optimizer", "lr_scheduler"):
        return top
    return "network"  # nested entries (e.g. an encoder's activation) must be modules


def check_checkpoint_classes(hparams: Mapping[str, Any], source: str = "the checkpoint") -> None:
    """Check every class a checkpoint's hyperparameters name, without calling any.

    ``class_path`` entries must resolve to the base of their slot (:func:`resolve_class`); the callable
    slots ``optimizer`` and ``lr_scheduler``, which jsonargparse would also resolve from a bare dotted
    string, must name an optimizer or scheduler class. Lightning's ``_instantiator`` entry is left to
    Lightning's own allowlist.

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

    for key in ("optimizer", "lr_scheduler"):
        value = hparams.get(key)
        if isinstance(value, str):
            try:
                resolve_class(value, key)
            except ValueError as err:
                raise ValueError(f"{source}: hyperparameter `{key}`: {err}") from None
    walk(dict(hparams), "")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a Lightning checkpoint safely: ``weights_only=True`` and errors that name the file.

    Raises:
        ValueError: If the file is missing, empty, truncated or corrupt, or is not a checkpoint (no
            ``state_dict``); the message names the file.

    Example::

        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".ckpt") as f:
        ...     load_checkpoint(f.name)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ... is empty (0 bytes), not a checkpoint
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"Expected a checkpoint file, got {str(path)!r}: no such file")
    size = file.stat().st_size
    if size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes), not a checkpoint")
    with open(file, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip format, or a legacy pickle
        raise ValueError(f"{str(path)!r} ({size} bytes) is not a PyTorch checkpoint (it starts with {head!r})")
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError) as err:
        raise ValueError(
            f"{str(path)!r} ({size} bytes) is truncated or corrupt, or not a PyTorch checkpoint: {err}"
        ) from err
    except Exception as err:  # pickle.UnpicklingError and friends: not something weights_only=True accepts
        raise ValueError(
            f"{str(path)!r} holds objects that a weights-only load refuses (it is not a plain checkpoint, or it "
            f"was written with arbitrary pickled objects): {err}"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{str(path)!r} is not a Lightning checkpoint: no `state_dict` (found {keys})")
    return checkpoint


__all__ = [
    "build",
    "check_checkpoint_classes",
    "describe",
    "load_checkpoint",
    "migrate_state_dict",
    "resolve_class",
    "save_hparams",
]
