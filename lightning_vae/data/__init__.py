"""DataModules: embedded shapes (the default), MNIST from IDX files (and its semi-supervised split), dSprites, a
user's own tensors; ``read_batch``; the interface of data with known factors (``GroundTruthData``)."""

from lightning_vae.data.common import BATCH_KEYS, CONTEXT_KEYS, Batch, read_batch
from lightning_vae.data.dsprites import DSpritesDataModule, load_dsprites
from lightning_vae.data.ground_truth import GroundTruthData, sample_uniform_factors
from lightning_vae.data.mnist import MissingDataError, MNISTDataModule, load_mnist, read_idx
from lightning_vae.data.semi_supervised import SemiSupervisedMNISTDataModule
from lightning_vae.data.shapes import FACTOR_NAMES, FACTOR_SIZES, ShapesDataModule, ShapesDataset, render_shapes
from lightning_vae.data.tensors import TensorDataModule, load_array

__all__ = [
    "BATCH_KEYS",
    "Batch",
    "CONTEXT_KEYS",
    "DSpritesDataModule",
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "GroundTruthData",
    "MNISTDataModule",
    "MissingDataError",
    "SemiSupervisedMNISTDataModule",
    "ShapesDataModule",
    "ShapesDataset",
    "TensorDataModule",
    "load_array",
    "load_dsprites",
    "load_mnist",
    "read_idx",
    "read_batch",
    "render_shapes",
    "sample_uniform_factors",
]
