"""Argument checks, with one rule for every public entry point of the package.

A value of the wrong type raises ``TypeError``; a value of the right type outside what is allowed raises
``ValueError``. Every message reads "Expected `name` to be ..., got ...", so a user sees the argument, what it
accepts and what came. Allowed names are taken from the ``Literal`` types that annotate the arguments
(:func:`choices`), so the check and the signature cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar, get_args

T = TypeVar("T")


def choices(literal: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal`` type (or a tuple of values, returned as it is).

    Example::

        >>> from typing import Literal
        >>> choices(Literal["dim", "group", "total"])
        ('dim', 'group', 'total')
    """
    if isinstance(literal, tuple):
        return literal
    values = get_args(literal)
    if not values:
        raise TypeError(f"Expected a Literal type or a tuple of values, got {literal!r}")
    return values


def check_choice(name: str, value: Any, allowed: Any) -> Any:
    """Return ``value`` if it is one of ``allowed`` (a ``Literal`` type or a tuple).

    Raises:
        TypeError: If every allowed value is a string and ``value`` is not.
        ValueError: If ``value`` is not one of the allowed values.

    Example::

        >>> from typing import Literal
        >>> check_choice("mode", "dim", Literal["dim", "total"])
        'dim'
        >>> check_choice("mode", "all", Literal["dim", "total"])
        Traceback (most recent call last):
        ...
        ValueError: Expected `mode` to be one of ('dim', 'total'), got 'all'
    """
    values = choices(allowed)
    if all(isinstance(v, str) for v in values) and not isinstance(value, str):
        raise TypeError(f"Expected `{name}` to be one of {values}, got {value!r} ({type(value).__name__})")
    if value not in values:
        raise ValueError(f"Expected `{name}` to be one of {values}, got {value!r}")
    return value


def check_type(name: str, value: Any, types: type[T] | tuple[type, ...], what: str | None = None) -> T:
    """Return ``value`` if it is an instance of ``types``; ``what`` names the expectation in the message.

    Raises:
        TypeError: Otherwise.

    Example::

        >>> from torch import nn
        >>> check_type("encoder", nn.Identity(), nn.Module)
        Identity()
        >>> check_type("encoder", "mlp", nn.Module, "a torch.nn.Module")
        Traceback (most recent call last):
        ...
        TypeError: Expected `encoder` to be a torch.nn.Module, got 'mlp' (str)
    """
    if not isinstance(value, types):
        if what is None:
            names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            what = f"an instance of {names}"
        raise TypeError(f"Expected `{name}` to be {what}, got {_show(value)}")
    return value  # type: ignore[return-value]


def _bounds_text(low: float | None, high: float | None, strict_low: bool, strict_high: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if strict_low else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if strict_high else '<='} {high:g}")
    return " and ".join(parts)


def _check_bounds(
    name: str, value: float, kind: str, low: float | None, high: float | None, strict_low: bool, strict_high: bool
) -> None:
    below = low is not None and (value < low or (strict_low and value == low))
    above = high is not None and (value > high or (strict_high and value == high))
    if below or above:
        bounds = _bounds_text(low, high, strict_low, strict_high)
        raise ValueError(f"Expected `{name}` to be {kind} {bounds}, got {value!r}")


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    strict_low: bool = False,
    strict_high: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real number (not a bool) within the bounds.

    Raises:
        TypeError: For a non-number (a bool, a string, ``None``).
        ValueError: For NaN, infinity, or a value outside the bounds.

    Example::

        >>> check_float("beta", 4)
        4.0
        >>> check_float("beta", -1.0, low=0.0, strict_low=True)
        Traceback (most recent call last):
        ...
        ValueError: Expected `beta` to be a finite float > 0, got -1.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Expected `{name}` to be a finite float, got {_show(value)}")
    if not math.isfinite(value):
        raise ValueError(f"Expected `{name}` to be a finite float, got {value!r}")
    _check_bounds(name, value, "a finite float", low, high, strict_low, strict_high)
    return float(value)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[low, high]``.

    Raises:
        TypeError: For a non-int (a float, a bool, a string).
        ValueError: For a value outside the bounds.

    Example::

        >>> check_int("n_samples", 5, low=1)
        5
        >>> check_int("n_samples", 0, low=1)
        Traceback (most recent call last):
        ...
        ValueError: Expected `n_samples` to be an int >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected `{name}` to be an int, got {_show(value)}")
    _check_bounds(name, value, "an int", low, high, False, False)
    return int(value)


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive ints (the shape of one example, or a latent size).

    Raises:
        TypeError: For something that is not a sequence of ints.
        ValueError: For an empty shape or a size below 1.

    Example::

        >>> check_shape("data_shape", [1, 28, 28])
        (1, 28, 28)
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"Expected `{name}` to be a sequence of ints, got {_show(shape)}")
    if any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
        raise TypeError(f"Expected `{name}` to be a sequence of ints, got {_show(shape)}")
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"Expected `{name}` to be a non-empty sequence of sizes >= 1, got {tuple(shape)}")
    return tuple(int(d) for d in shape)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_single_sample(n_samples: Any, user: str) -> None:
    """The rule that free bits and the capacity objective apply to the single-sample ELBO, stated once.

    ``user`` names what needs the rule (a callback, or the module's argument), for the message.

    Raises:
        TypeError: If ``n_samples`` is not an int.
        ValueError: If ``n_samples`` is not 1.

    Example::

        >>> check_single_sample(1, "FreeBits")
        >>> check_single_sample(5, "FreeBits")
        Traceback (most recent call last):
        ...
        ValueError: Expected `n_samples` to be 1 for FreeBits (free bits and the capacity objective apply to the \
single-sample ELBO), got 5; set n_samples=1
    """
    if check_int("n_samples", n_samples, low=1) != 1:
        raise ValueError(
            f"Expected `n_samples` to be 1 for {user} (free bits and the capacity objective apply to the "
            f"single-sample ELBO), got {n_samples}; set n_samples=1"
        )


__all__ = ["check_choice", "check_float", "check_int", "check_shape", "check_single_sample", "check_type", "choices"]
