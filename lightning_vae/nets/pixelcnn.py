"""A small PixelCNN decoder conditioned on z: the autoregressive decoder that makes VAEs collapse.

An autoregressive decoder models ``p(x|z) = prod_i p(x_i | x_<i, z)`` over pixels in raster order
(van den Oord et al. 2016). It is strong enough to model the data without ``z``, which is the
setting where the posterior collapses (Bowman et al. 2016; Chen et al. 2017; He et al. 2019).

Decoder contract. Unlike the other decoders, it needs the data too (teacher forcing): its
``forward(z, x)`` returns the likelihood parameters of each pixel given the pixels before it and
``z``. It marks this with the class attribute ``autoregressive = True``; :class:`~lightning_vae.VAE`
then passes ``x`` (repeated over importance samples) to it, and samples pixel by pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import Tensor, nn

from lightning_vae.checks import check_choice, check_int, check_shape
from lightning_vae.nets.common import as_params

MaskType = Literal["A", "B"]


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the pixels before the centre in raster order.

    Mask ``"A"`` (first layer) also hides the centre pixel; mask ``"B"`` (later layers) shows it,
    since later feature maps at a pixel already depend only on the pixels before it. All channels
    of a pixel are hidden together, so the colour channels of one pixel are independent given the
    pixels before it.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd side of the square kernel.
        mask_type: ``"A"`` or ``"B"``.
        dilation: Spacing of the kernel taps (the mask applies to the taps, so the order is kept).

    Example::

        >>> import torch
        >>> conv = MaskedConv2d(1, 1, 3, mask_type="A")
        >>> conv.mask[0, 0]
        tensor([[1., 1., 1.],
                [1., 0., 0.],
                [0., 0., 0.]])
    """

    mask: Tensor

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, mask_type: MaskType, dilation: int = 1
    ) -> None:
        check_choice("mask_type", mask_type, MaskType)
        if check_int("kernel_size", kernel_size, low=1) % 2 != 1:
            raise ValueError(f"Expected `kernel_size` to be odd, got {kernel_size}")
        super().__init__(
            in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation
        )
        mask = torch.ones(kernel_size, kernel_size)
        centre = kernel_size // 2
        mask[centre, centre + (mask_type == "B") :] = 0.0
        mask[centre + 1 :] = 0.0
        self.register_buffer("mask", mask.expand(out_channels, in_channels, -1, -1).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class PixelCNNDecoder(HyperparametersMixin, nn.Module):
    """A PixelCNN over images conditioned on ``z`` by a learned per-channel bias in every layer.

    Layers: a masked ``first_kernel_size`` convolution (mask A), ``n_layers`` masked
    ``kernel_size`` convolutions (mask B, optionally dilated to see further at the same cost) with
    ReLU, then two 1x1 convolutions to the likelihood parameters. ``z`` enters every masked layer
    through a linear map added to the feature maps (the conditional PixelCNN of van den Oord et al.
    2016).

    Args:
        latent_dim: Size D of z.
        image_shape: ``(channels, height, width)`` of the images.
        channels: Feature channels of the hidden layers.
        n_layers: Masked layers after the first one.
        kernel_size: Odd kernel size of the later masked layers.
        first_kernel_size: Odd kernel size of the first (mask A) layer.
        dilations: Dilation of each later masked layer (``n_layers`` ints); all 1 when left out.
        params_per_element: Parameters per pixel and channel (1 for Bernoulli logits, 256 for the
            categorical likelihood); above 1 the output is ``(B, params_per_element, C, H, W)``.

    Example::

        >>> import torch
        >>> dec = PixelCNNDecoder(8, (1, 28, 28), channels=16, n_layers=2)
        >>> dec(torch.randn(4, 8), torch.rand(4, 1, 28, 28)).shape
        torch.Size([4, 1, 28, 28])
    """

    #: Marks a decoder whose ``forward`` takes ``(z, x)``; see the module docstring.
    autoregressive = True

    def __init__(
        self,
        latent_dim: int = 32,
        image_shape: Sequence[int] = (1, 28, 28),
        channels: int = 32,
        n_layers: int = 4,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        dilations: Sequence[int] | None = None,
        params_per_element: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.image_shape = check_shape("image_shape", image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"Expected `image_shape` to be (channels, height, width), got {image_shape!r}")
        check_int("channels", channels, low=1)
        check_int("n_layers", n_layers, low=1)
        self.params_per_element = check_int("params_per_element", params_per_element, low=1)
        dilations = [1] * n_layers if dilations is None else list(check_shape("dilations", dilations))
        if len(dilations) != n_layers:
            raise ValueError(f"Expected `dilations` to hold {n_layers} ints >= 1 (one per layer), got {dilations!r}")
        c_img = self.image_shape[0]
        self.first = MaskedConv2d(c_img, channels, first_kernel_size, "A")
        self.layers = nn.ModuleList(MaskedConv2d(channels, channels, kernel_size, "B", d) for d in dilations)
        # One linear map gives the conditioning bias of every masked layer.
        self.condition = nn.Linear(latent_dim, channels * (n_layers + 1))
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, c_img * params_per_element, 1),
        )
        self.channels = channels

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        """Parameters of ``p(x_i | x_<i, z)`` of every pixel for ``z`` ``(..., D)`` and ``x`` ``(..., C, H, W)``."""
        lead = z.shape[:-1]
        if x.shape[: len(lead)] != lead or tuple(x.shape[len(lead) :]) != self.image_shape:
            raise ValueError(
                f"PixelCNNDecoder expects z of shape (..., {self.latent_dim}) and images of shape "
                f"(..., *{self.image_shape}) with the same leading dimensions, got z {tuple(z.shape)} and "
                f"x {tuple(x.shape)}"
            )
        z = z.reshape(-1, z.shape[-1])
        x = x.reshape(-1, *self.image_shape).to(z.dtype)
        biases = self.condition(z).view(z.shape[0], -1, self.channels, 1, 1).unbind(1)
        h = self.first(x) + biases[0]
        for layer, bias in zip(self.layers, biases[1:]):
            h = layer(torch.relu(h)) + bias
        return as_params(self.head(h), lead, self.params_per_element, self.image_shape)
