"""Reference encoders and decoders. Each records its arguments, so a VAE built from them reloads alone."""

from lightning_vae.nets.conv import ConvDecoder, ConvEncoder
from lightning_vae.nets.mlp import MLPDecoder, MLPEncoder

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]
