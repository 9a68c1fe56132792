"""Reference encoders and decoders. Each records its arguments, so a VAE built from them reloads alone."""

from lightning_vae.nets.conv import ConvDecoder, ConvEncoder
from lightning_vae.nets.made import MADE, MaskedLinear
from lightning_vae.nets.mlp import (
    ConditionalMLPDecoder,
    ConditionalMLPEncoder,
    MLPClassifier,
    MLPDecoder,
    MLPEncoder,
)
from lightning_vae.nets.pixelcnn import MaskedConv2d, PixelCNNDecoder

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]
__all__ += ["MaskedConv2d", "PixelCNNDecoder"]
__all__ += ["MADE", "MaskedLinear"]
__all__ += ["ConditionalMLPDecoder", "ConditionalMLPEncoder", "MLPClassifier"]
