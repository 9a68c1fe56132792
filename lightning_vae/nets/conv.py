"""Convolutional encoder and decoder for square images of 28, 32 or 64 pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn

from lightning_vae.checks import check_choice, check_int, check_shape
from lightning_vae.nets.common import Activation, as_params, make_activation

ImageSize = Literal[28, 32, 64]

#: Default channels of the stride-2 stages for each image size (each stage halves the side).
DEFAULT_CHANNELS: dict[int, tuple[int, ...]] = {28: (32, 64), 32: (32, 64, 64), 64: (32, 32, 64, 64)}


def _stages(image_size: int, channels: Sequence[int] | None) -> tuple[tuple[int, ...], int]:
    check_choice("image_size", check_int("image_size", image_size), ImageSize)
    default = DEFAULT_CHANNELS[image_size]
    chans = default if channels is None else check_shape("channels", channels)
    if len(chans) != len(default):
        raise ValueError(
            f"Expected `channels` to hold {len(default)} ints >= 1 for {image_size}x{image_size} images "
            f"(one per stride-2 stage), got {channels!r}"
        )
    return chans, image_size // 2 ** len(chans)


class ConvEncoder(HyperparametersMixin, nn.Module):
    """Stride-2 4x4 convolutions down to a small map, then a dense layer to ``(loc, log_var)``.

    Args:
        in_channels: Channels of the input images.
        image_size: Side of the square input: 28, 32 or 64.
        latent_dim: Size D of z.
        channels: Channels of each stride-2 stage (default per size in :data:`DEFAULT_CHANNELS`).
        hidden_size: Width of the dense layer.
        activation: Nonlinearity.

    Example::

        >>> import torch
        >>> loc, _ = ConvEncoder(1, 64, latent_dim=10)(torch.rand(2, 1, 64, 64))
        >>> loc.shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: ImageSize = 28,
        latent_dim: int = 10,
        channels: Sequence[int] | None = None,
        hidden_size: int = 256,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        check_int("in_channels", in_channels, low=1)
        check_int("hidden_size", hidden_size, low=1)
        chans, side = _stages(image_size, channels)
        self.input_shape = (in_channels, image_size, image_size)
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in chans:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), make_activation(activation)]
            c_in = c
        layers += [nn.Flatten(), nn.Linear(c_in * side * side, hidden_size), make_activation(activation)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden_size, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"ConvEncoder expects images of shape (B, *{self.input_shape}), got {tuple(x.shape)}")
        loc, log_var = self.head(self.body(x)).chunk(2, dim=-1)
        return loc, log_var


class ConvDecoder(HyperparametersMixin, nn.Module):
    """Dense layers to a small map, then stride-2 transposed convolutions up to the image size.

    Args:
        latent_dim: Size D of z.
        out_channels: Channels of the images.
        image_size: Side of the square output: 28, 32 or 64.
        channels: Channels of each stage, listed from the image side as for :class:`ConvEncoder`.
        hidden_size: Width of the dense layer.
        activation: Nonlinearity.
        params_per_element: Parameters per pixel and channel (256 for the categorical likelihood,
            ``3 * n_components`` for the logistic mixture); above 1 the output is
            ``(B, params_per_element, out_channels, H, W)``.

    Example::

        >>> import torch
        >>> ConvDecoder(10, out_channels=1, image_size=28)(torch.randn(2, 10)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int = 10,
        out_channels: int = 1,
        image_size: ImageSize = 28,
        channels: Sequence[int] | None = None,
        hidden_size: int = 256,
        activation: Activation = "relu",
        params_per_element: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        check_int("out_channels", out_channels, low=1)
        self.params_per_element = check_int("params_per_element", params_per_element, low=1)
        chans, side = _stages(image_size, channels)
        self.out_channels, self.image_size, self._side, self._top = out_channels, image_size, side, chans[-1]
        self.dense = nn.Sequential(
            nn.Linear(latent_dim, hidden_size),
            make_activation(activation),
            nn.Linear(hidden_size, chans[-1] * side * side),
            make_activation(activation),
        )
        layers: list[nn.Module] = []
        rev = list(reversed(chans))
        for c_in, c_out in zip(rev[:-1], rev[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), make_activation(activation)]
        layers.append(nn.ConvTranspose2d(rev[-1], out_channels * params_per_element, 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).view(-1, self._top, self._side, self._side)
        out = self.body(h)
        return as_params(out, lead, self.params_per_element, (self.out_channels, self.image_size, self.image_size))
