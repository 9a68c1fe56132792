"""Callbacks that plug into any Lightning pipeline training a VAE (or any module keeping the annealing protocol)."""

from lightning_vae.callbacks.aggressive import AggressiveEncoderTraining
from lightning_vae.callbacks.annealing import CapacityAnnealing, KLAnnealing
from lightning_vae.callbacks.collapse import PosteriorCollapseMonitor
from lightning_vae.callbacks.embedding import LatentEmbeddingLogger
from lightning_vae.callbacks.exact_resume import ExactResume
from lightning_vae.callbacks.free_bits import FreeBits
from lightning_vae.callbacks.kl_decomposition import KLDecompositionMonitor
from lightning_vae.callbacks.latents import PosteriorMeanWriter
from lightning_vae.callbacks.prior_samples import PriorSampleLogger
from lightning_vae.callbacks.reconstructions import ReconstructionLogger
from lightning_vae.callbacks.target_rate import TargetRate
from lightning_vae.callbacks.tensorboard import TensorBoardDashboard
from lightning_vae.callbacks.traversals import LatentTraversalLogger

__all__ = [
    "CapacityAnnealing",
    "ExactResume",
    "FreeBits",
    "KLAnnealing",
    "KLDecompositionMonitor",
    "LatentEmbeddingLogger",
    "LatentTraversalLogger",
    "PosteriorMeanWriter",
    "PriorSampleLogger",
    "ReconstructionLogger",
    "TargetRate",
    "TensorBoardDashboard",
]
__all__ += ["AggressiveEncoderTraining", "PosteriorCollapseMonitor"]
