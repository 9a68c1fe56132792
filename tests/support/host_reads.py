"""Count host reads (device-to-host synchronisations): :class:`HostReads` patches the reading methods of
``torch.Tensor`` and the copying factories of ``torch`` and records each call made while a watched method runs."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any

import torch

#: The ``torch.Tensor`` methods through which the host reads a tensor's values.
READ_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")

#: Functions that copy host data (Python numbers, lists, arrays) to a device when given ``device=``: on an
#: accelerator a blocking host-to-device copy waits for the queue too.
COPY_FUNCTIONS = ("tensor", "as_tensor")

#: Hooks of the module and the callbacks that run inside one training step.
STEP_HOOKS = (
    "on_train_batch_start",
    "training_step",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
)


@dataclass
class Read:
    method: str
    where: str
    step: Any


@dataclass
class HostReads:
    """Counts host reads of tensors made while a watched method runs (see the module docstring).

    Each read is filed under :attr:`label` (set by :class:`StepLabel` to the batch index and whether
    the step logs) and the place in the code that made it.
    """

    reads: list[Read] = field(default_factory=list)
    label: Any = None
    #: Tensors known to live on the host: returned by ``.cpu()`` (a copy here, as on an accelerator) or built
    #: by ``torch.tensor``/``torch.as_tensor`` without a device.
    host: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    #: The copies ``.cpu()`` returned: reading them (or a view of one) waits for no device, so it is not counted.
    copies: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    _depth: int = 0

    @contextmanager
    def patched(self) -> Iterator[HostReads]:
        saved = {name: torch.Tensor.__dict__.get(name) for name in READ_METHODS}
        factories = {name: getattr(torch, name) for name in COPY_FUNCTIONS}
        for name in READ_METHODS:
            setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        for name, function in factories.items():
            setattr(torch, name, self._wrap_copy(name, function))
        try:
            yield self
        finally:
            for name, original in saved.items():
                if original is None:
                    delattr(torch.Tensor, name)
                else:
                    setattr(torch.Tensor, name, original)
            for name, function in factories.items():
                setattr(torch, name, function)

    def _record(self, name: str) -> None:
        frame = sys._getframe(2)
        where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} ({frame.f_code.co_name})"
        self.reads.append(Read(name, where, self.label))

    def _wrap_copy(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        counter = self

        @wraps(function)
        def copy(data: Any, *args: Any, **kwargs: Any) -> Any:
            if counter._depth and kwargs.get("device") is not None and not isinstance(data, torch.Tensor):
                counter._record(f"torch.{name}(<host data>, device=...)")
            result = function(data, *args, **kwargs)
            if kwargs.get("device") is None and not isinstance(data, torch.Tensor):
                counter.host.add(result)
            return result

        return copy

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        counter = self

        @wraps(method)
        def read(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if counter._depth and not counter._is_copy(tensor):
                counter._record(name)
            if name == "cpu":  # a copy, as from an accelerator, so the host copy is told apart from its source
                copy = method(tensor, *args, **kwargs).clone()
                counter.host.add(copy)
                counter.copies.add(copy)
                return copy
            return method(tensor, *args, **kwargs)

        return read

    def _is_copy(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` is a ``.cpu()`` copy or a view of one (compared by identity, not by value)."""
        known = {id(t) for t in self.copies}
        return id(tensor) in known or (tensor._base is not None and id(tensor._base) in known)

    def watch(self, obj: object, names: tuple[str, ...] = STEP_HOOKS) -> None:
        """Count the reads made while ``obj``'s methods ``names`` run (instance attributes shadow them)."""
        for name in names:
            method = getattr(obj, name, None)
            if callable(method):
                setattr(obj, name, self._watched(method))

    def _watched(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1

        return call
