"""make_activation (nets/common.py): every name of the Activation type gives its torch module, a new one each call;
other names and types are refused with the names allowed."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from torch import nn

from lightning_vae.nets.common import Activation, make_activation


def test_every_activation_name_gives_its_module() -> None:
    expected = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
    expected.update(leaky_relu=nn.LeakyReLU, softplus=nn.Softplus)
    assert set(get_args(Activation)) == set(expected)
    x = torch.linspace(-3, 3, 13)
    for name, cls in expected.items():
        module = make_activation(name)
        assert type(module) is cls and make_activation(name) is not module  # a new module each call
        torch.testing.assert_close(module(x), cls()(x), rtol=0, atol=0)
    assert type(make_activation("tanh")).__name__ == "Tanh"


def test_other_names_and_types_are_refused() -> None:
    with pytest.raises(ValueError, match=r"Expected `activation` to be one of \('relu', 'elu', .*\), got 'swish'"):
        make_activation("swish")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Expected `activation` to be one of .*, got <class .*ReLU.*> \(type\)"):
        make_activation(nn.ReLU)  # type: ignore[arg-type]
