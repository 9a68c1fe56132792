"""The argument checks (checks.py): TypeError for a wrong type and ValueError for a wrong value, every message
"Expected `name` to be ..., got ...", bounds open or closed, bools never taken for numbers, and allowed names read
from Literal types."""

from __future__ import annotations

import math
import re
from typing import Literal

import pytest
from torch import nn

from lightning_vae.checks import (
    check_choice,
    check_float,
    check_int,
    check_shape,
    check_single_sample,
    check_type,
    choices,
)

Mode = Literal["dim", "group", "total"]


def test_choices_come_from_a_literal_type_or_a_tuple() -> None:
    assert choices(Mode) == ("dim", "group", "total")
    assert choices(Literal[28, 32, 64]) == (28, 32, 64)
    assert choices(("a", "b")) == ("a", "b")
    with pytest.raises(TypeError, match=r"Expected a Literal type or a tuple of values, got <class 'str'>"):
        choices(str)


def test_check_choice() -> None:
    assert check_choice("mode", "group", Mode) == "group"
    assert check_choice("size", 32, Literal[28, 32, 64]) == 32
    with pytest.raises(ValueError, match=r"^Expected `mode` to be one of \('dim', 'group', 'total'\), got 'all'$"):
        check_choice("mode", "all", Mode)
    with pytest.raises(TypeError, match=r"^Expected `mode` to be one of \('dim', 'group', 'total'\), got 1 \(int\)$"):
        check_choice("mode", 1, Mode)
    with pytest.raises(ValueError, match=r"got 48$"):  # not all strings: a value of another type is a ValueError
        check_choice("size", 48, Literal[28, 32, 64])


def test_check_type() -> None:
    layer = nn.Linear(1, 1)
    assert check_type("encoder", layer, nn.Module) is layer
    with pytest.raises(TypeError, match=r"^Expected `encoder` to be an instance of Module, got 'mlp' \(str\)$"):
        check_type("encoder", "mlp", nn.Module)
    with pytest.raises(TypeError, match=r"^Expected `x` to be an instance of int or str, got 1.5 \(float\)$"):
        check_type("x", 1.5, (int, str))
    with pytest.raises(TypeError, match=r"^Expected `path` to be a folder path, got None \(NoneType\)$"):
        check_type("path", None, str, "a folder path")


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"low": 0.0, "strict_low": True}, 0.0, "a finite float > 0, got 0.0"),
        ({"low": 0.0}, -1e-9, "a finite float >= 0, got -1e-09"),
        ({"high": 1.0, "strict_high": True}, 1.0, "a finite float < 1, got 1.0"),
        ({"low": 0.0, "high": 1.0}, 1.5, "a finite float >= 0 and <= 1, got 1.5"),
        ({}, math.nan, "a finite float, got nan"),
        ({}, -math.inf, "a finite float, got -inf"),
    ],
)
def test_check_float_refuses_values_outside_the_bounds(kwargs: dict, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=f"^Expected `beta` to be {message}$"):
        check_float("beta", value, **kwargs)


def test_check_float_takes_numbers_at_the_closed_bounds_and_refuses_non_numbers() -> None:
    assert check_float("beta", 0, low=0.0) == 0.0 and isinstance(check_float("beta", 3), float)
    assert check_float("p", 1.0, low=0.0, high=1.0) == 1.0
    for bad, shown in ((True, "True (bool)"), ("1", "'1' (str)"), (None, "None (NoneType)")):
        with pytest.raises(TypeError, match=rf"^Expected `beta` to be a finite float, got {re.escape(shown)}$"):
            check_float("beta", bad)


def test_check_int() -> None:
    assert check_int("n", 5, low=1, high=5) == 5
    with pytest.raises(ValueError, match=r"^Expected `n` to be an int >= 1, got 0$"):
        check_int("n", 0, low=1)
    with pytest.raises(ValueError, match=r"^Expected `n` to be an int >= 1 and <= 4, got 5$"):
        check_int("n", 5, low=1, high=4)
    for bad, shown in ((2.0, r"2.0 \(float\)"), (False, r"False \(bool\)"), ("3", r"'3' \(str\)")):
        with pytest.raises(TypeError, match=rf"^Expected `n` to be an int, got {shown}$"):
            check_int("n", bad)


def test_check_shape() -> None:
    assert check_shape("data_shape", [1, 28, 28]) == (1, 28, 28)
    assert check_shape("data_shape", (3,)) == (3,)
    with pytest.raises(ValueError, match=r"^Expected `s` to be a non-empty sequence of sizes >= 1, got \(\)$"):
        check_shape("s", [])
    with pytest.raises(ValueError, match=r"got \(1, 0, 2\)$"):
        check_shape("s", (1, 0, 2))
    for bad in ("128", 784, (1, 2.0), (1, True), None):
        with pytest.raises(TypeError, match=r"^Expected `s` to be a sequence of ints, got "):
            check_shape("s", bad)


def test_check_single_sample() -> None:
    check_single_sample(1, "FreeBits")
    rule = r"^Expected `n_samples` to be 1 for FreeBits \(free bits .* single-sample ELBO\), got 5; set n_samples=1$"
    with pytest.raises(ValueError, match=rule):
        check_single_sample(5, "FreeBits")
    with pytest.raises(ValueError, match=r"`n_samples` to be an int >= 1, got 0"):
        check_single_sample(0, "FreeBits")
    with pytest.raises(TypeError, match=r"`n_samples` to be an int, got 1.0 \(float\)"):
        check_single_sample(1.0, "FreeBits")
