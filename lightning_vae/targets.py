"""The classes and callables a Hydra config names, checked against their slots before anything is built.

Hydra's ``instantiate`` calls whatever a ``_target_`` names, at any depth: a run folder's ``.hydra/config.yaml``
or a config group option naming ``builtins.open`` or ``os.system`` would run it. The same holds for the
``hydra`` section (its ``callbacks``, ``launcher`` and ``sweeper`` are instantiated by Hydra itself, before the
task starts) and for the ``logging.config`` dictionaries of ``hydra.job_logging`` and ``hydra.hydra_logging``,
whose ``class`` and ``()`` entries are called. :func:`check_config` walks a config and resolves every such name
against the slot its place gives it (:func:`lightning_vae.building.resolve_class`): ``data`` a
``LightningDataModule``, ``model`` a ``LightningModule`` whose ``encoder``/``decoder``/``model`` are
``nn.Module``\\ s, ``likelihood`` a ``Likelihood``, ``prior`` a ``Prior``, any ``optimizer`` an optimizer,
``callbacks.*`` Lightning callbacks, ``logger.*`` loggers, ``trainer`` Lightning's ``Trainer`` (its ``strategy``,
``plugins``, ``profiler`` their bases), ``hydra.callbacks.*`` Hydra callbacks, the launcher a ``Launcher``, the
sweeper a ``Sweeper``, logging handlers, formatters and filters their ``logging`` bases; any other nested entry
must be an ``nn.Module``. Nothing is called: a name that does not fit is refused with a ``ValueError`` naming the
source, the key and the name. ``compile`` is held to :data:`lightning_vae.building.COMPILE_FROM_FILES`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightning_vae.building import check_compile_options, resolve_class

#: The slot of an entry by the key it sits under (anywhere below the top level).
_KEY_SLOTS = {
    "optimizer": "optimizer",
    "lr_scheduler": "lr_scheduler",
    "scheduler": "lr_scheduler",
    "likelihood": "likelihood",
    "prior": "prior",
    "objective": "objective",
    "data": "data",
    "datamodule": "data",
}
#: The slots of the trainer's own arguments.
_TRAINER_SLOTS = {
    "callbacks": "callback",
    "logger": "logger",
    "strategy": "strategy",
    "plugins": "plugin",
    "profiler": "profiler",
    "accelerator": "accelerator",
}
#: ``logging.config.dictConfig`` sections whose ``class`` / ``()`` entries are called, and the base each must have.
_LOGGING_SECTIONS = {"handlers": logging.Handler, "formatters": logging.Formatter, "filters": logging.Filter}
#: The only ``ext://`` objects a logging config may name.
_LOGGING_EXTERNALS = ("ext://sys.stdout", "ext://sys.stderr")


def slot_of(path: Sequence[str | int]) -> str:
    """The slot of a ``_target_`` at ``path`` (keys from the config's root; list positions as ints).

    Example::

        >>> slot_of(["model", "encoder"]), slot_of(["callbacks", "aggressive", "optimizer"]), slot_of(["trainer"])
        ('network', 'optimizer', 'trainer')
    """
    keys = [str(k) for k in path if not isinstance(k, int)]
    if not keys:
        return "network"
    top, depth = keys[0], len(keys)
    if top == "data" and depth == 1:
        return "data"
    if top == "model" and depth == 1:
        return "model"
    if top == "model" and depth == 2 and keys[1] in ("encoder", "decoder", "model"):
        return "network"
    if top == "callbacks" and depth == 2:
        return "callback"
    if top == "logger" and depth == 2:
        return "logger"
    if top == "trainer":
        if depth == 1:
            return "trainer"
        if depth == 2 and keys[1] in _TRAINER_SLOTS:
            return _TRAINER_SLOTS[keys[1]]
    if top == "hydra":
        if depth == 2 and keys[1] in ("launcher", "sweeper"):
            return f"hydra_{keys[1]}"
        if depth == 3 and keys[1] == "callbacks":
            return "hydra_callback"
        if depth == 3 and keys[1:] == ["sweeper", "sampler"]:
            return "hydra_sampler"  # the Optuna sweeper's sampler (hparams_search=shapes_optuna)
        return "hydra_part"
    return _KEY_SLOTS.get(keys[-1], "network")


def _dotted(path: Sequence[str | int]) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "<root>"


def _items(node: Any) -> list[tuple[Any, Any]]:
    """A mapping's or sequence's children; a child whose interpolation does not resolve here is left out."""
    keys = list(node.keys()) if isinstance(node, Mapping) else list(range(len(node)))
    children = []
    for key in keys:
        try:
            children.append((key, node[key]))
        except Exception:  # noqa: BLE001 - an interpolation that needs the running job (${hydra:...}): no target there
            continue
    return children


def _is_container(node: Any) -> bool:
    return isinstance(node, Mapping) or (isinstance(node, Sequence) and not isinstance(node, (str, bytes)))


def check_config(config: Any, source: str, where: Callable[[Sequence[str | int]], str] | None = None) -> None:
    """Resolve every ``_target_`` of ``config`` (a Hydra config, a mapping from YAML) against its slot; call nothing.

    ``config`` may be a whole composed config (with or without its ``hydra`` section) or a part of one as found
    in a file (``{"data": {...}}``). ``where(path)`` may add to the message where the entry came from (a config
    group option).

    Raises:
        ValueError: For a ``_target_`` that is not a dotted path to a class of its slot's base, a logging entry
            naming anything but a handler, formatter or filter class, or ``compile`` settings beyond the whitelist;
            the message names ``source``, the key and the name.

    Example::

        >>> check_config({"data": {"_target_": "lightning_vae.data.ShapesDataModule"}}, "config.yaml")
        >>> check_config({"data": {"_target_": "lightning_vae.data.ShapesDataModule",
        ...                        "transform": {"_target_": "builtins.open", "file": "x"}}}, "config.yaml")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: config.yaml: `data.transform._target_`: Expected `network` to name a subclass of ... refused ...
    """

    def refuse(path: Sequence[str | int], message: str) -> None:
        extra = where(path) if where is not None else ""
        raise ValueError(f"{source}: `{_dotted(path)}`: {message}{extra}")

    def walk(node: Any, path: list[str | int]) -> None:
        if isinstance(node, Mapping):
            if "_target_" in node:
                try:
                    target = node["_target_"]
                except Exception as err:  # noqa: BLE001 - an interpolation that cannot be resolved before the run
                    refuse([*path, "_target_"], f"cannot be resolved before anything runs ({err}); refused")
                slot = slot_of(path)
                if not isinstance(target, str):
                    refuse([*path, "_target_"], f"Expected a dotted class path, got {target!r}; refused")
                try:
                    resolve_class(target, slot)
                except ValueError as err:
                    refuse([*path, "_target_"], str(err))
            if "compile" in node and len(path) == 1 and path[0] == "model":
                try:
                    check_compile_options(_plain(node["compile"]), source)
                except ValueError as err:
                    raise ValueError(f"{err}{where([*path, 'compile']) if where is not None else ''}") from None
            if len(path) == 2 and path[0] == "hydra" and path[1] in ("job_logging", "hydra_logging"):
                _check_logging(node, path, refuse)
                return
        for key, child in _items(node):
            if _is_container(child):
                walk(child, [*path, key])

    walk(config, [])


def _plain(value: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core, a dependency
        pass
    return value


def _check_logging(config: Any, path: list[str | int], refuse: Callable[..., None]) -> None:
    """The ``class`` and ``()`` entries of a ``logging.config.dictConfig`` dictionary, and its ``ext://`` names."""
    for section, base in _LOGGING_SECTIONS.items():
        entries = config.get(section) if isinstance(config, Mapping) else None
        if not isinstance(entries, Mapping):
            continue
        for name, entry in _items(entries):
            if not isinstance(entry, Mapping):
                continue
            for key in ("class", "()"):
                if key in entry:
                    _check_logging_class(entry[key], base, [*path, section, name, key], refuse)

    def externals(node: Any, where: list[str | int]) -> None:
        for key, child in _items(node):
            if _is_container(child):
                externals(child, [*where, key])
            elif isinstance(child, str) and child.startswith("ext://") and child not in _LOGGING_EXTERNALS:
                refuse([*where, key], f"a logging config may name only {_LOGGING_EXTERNALS}, got {child!r}; refused")

    externals(config, path)


def _check_logging_class(value: Any, base: type, path: list[str | int], refuse: Callable[..., None]) -> None:
    import importlib

    if not isinstance(value, str) or "." not in value:
        refuse(path, f"Expected a dotted path to a subclass of logging.{base.__name__}, got {value!r}; refused")
    module_name, _, name = str(value).rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        refuse(path, f"Cannot import {value!r}: {err}")
        return
    if not (isinstance(obj, type) and issubclass(obj, base)):
        refuse(
            path,
            f"Expected a subclass of logging.{base.__name__}, got {value!r} (a {type(obj).__name__}); refused "
            "without calling it",
        )


__all__ = ["check_config", "slot_of"]
