"""Procedural dSprites-style shapes: binary images with known generative factors, no download.

Each image shows one shape (square, ellipse or heart) at one of 6 scales, 40 orientations and
32 x 32 positions, the factor grid of dSprites (Matthey et al. 2017). Images are rendered from
the factors, so the data set is deterministic for a seed and carries its ground truth.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_vae.checks import check_choice, check_int
from lightning_vae.data.common import TrainValDataModule, check_loader_args
from lightning_vae.data.ground_truth import UniformFactorGrid, check_factors

#: The image sides the shapes are rendered at.
ImageSize = Literal[28, 32, 64]


def _check_image_size(image_size: Any) -> int:
    return check_choice("image_size", check_int("image_size", image_size), ImageSize)


#: Names and sizes of the factors, in the column order of the factor tensor.
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")


def factor_values(factors: Tensor) -> dict[str, Tensor]:
    """Map integer factor indices ``(N, 5)`` to values: scale in [0.5, 1], angle in radians, positions in [0, 1]."""
    f = factors.long()
    return {
        "shape": f[:, 0],
        "scale": 0.5 + 0.1 * f[:, 1].float(),
        "orientation": f[:, 2].float() * (2 * math.pi / FACTOR_SIZES[2]),
        "pos_x": f[:, 3].float() / (FACTOR_SIZES[3] - 1),
        "pos_y": f[:, 4].float() / (FACTOR_SIZES[4] - 1),
    }


def render_shapes(factors: Tensor, image_size: int = 64) -> Tensor:
    """Render binary images ``(N, 1, S, S)`` (uint8 0/1) from integer factors ``(N, 5)``.

    Example::

        >>> import torch
        >>> img = render_shapes(torch.tensor([[0, 5, 0, 16, 16]]), image_size=32)
        >>> img.shape, int(img[0, 0, 16, 16])
        (torch.Size([1, 1, 32, 32]), 1)
    """
    if factors.dim() != 2 or factors.shape[1] != len(FACTOR_NAMES):
        raise ValueError(f"Expected factors of shape (N, {len(FACTOR_NAMES)}), got {tuple(factors.shape)}")
    v = factor_values(factors)
    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    py, px = torch.meshgrid(coords, coords, indexing="ij")  # (S, S)
    # Keep shapes inside the frame: centres span [0.2, 0.8] of the image.
    cx = (0.2 + 0.6 * v["pos_x"]).view(-1, 1, 1)
    cy = (0.2 + 0.6 * v["pos_y"]).view(-1, 1, 1)
    radius = (0.2 * v["scale"]).view(-1, 1, 1)
    cos, sin = torch.cos(v["orientation"]).view(-1, 1, 1), torch.sin(v["orientation"]).view(-1, 1, 1)
    dx, dy = px - cx, py - cy
    u = (cos * dx + sin * dy) / radius
    w = (-sin * dx + cos * dy) / radius
    square = torch.maximum(u.abs(), w.abs()) <= 0.75
    ellipse = u.pow(2) + (w / 0.5).pow(2) <= 1.0
    hx, hy = 1.15 * u, -(1.15 * w) + 0.2  # heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, pointing down
    heart = (hx.pow(2) + hy.pow(2) - 1).pow(3) - hx.pow(2) * hy.pow(3) <= 0
    shape = v["shape"].view(-1, 1, 1)
    image = torch.where(shape == 0, square, torch.where(shape == 1, ellipse, heart))
    return image.unsqueeze(1).to(torch.uint8)


def sample_factors(n: int, seed: int) -> Tensor:
    """Draw ``n`` factor combinations uniformly from the grid with a fixed seed, shape ``(n, 5)``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(size, (n,), generator=generator) for size in FACTOR_SIZES], dim=1)


class ShapesDataset(Dataset):
    """``n`` rendered shapes; each item is ``(image, factors)`` with a float image in {0, 1}.

    Args:
        n: Number of examples.
        image_size: Side of the images: 28, 32 or 64.
        seed: Seed of the factor draw (different seeds give different examples).
    """

    def __init__(self, n: int, image_size: int = 64, seed: int = 0) -> None:
        check_int("n", n, low=1)
        _check_image_size(image_size)
        self.factors = sample_factors(n, seed)
        chunks = [render_shapes(f, image_size) for f in self.factors.split(4096)]
        self.images = torch.cat(chunks).float()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.factors[index]


class ShapesDataModule(UniformFactorGrid, TrainValDataModule):
    """The embedded default data: dSprites-style shapes rendered on the fly, with ground-truth factors.

    Batches are ``(images, factors)``: images ``(B, 1, S, S)`` in {0, 1}, factors ``(B, 5)`` integer
    indices in the order of :data:`FACTOR_NAMES`. It is a ground-truth source
    (:class:`~lightning_vae.data.ground_truth.GroundTruthData`): ``sample_factors`` draws factors uniformly from the
    grid and ``render`` draws their images at the module's ``image_size``, for the disentanglement metrics.

    Args:
        image_size: Side of the images: 28, 32 or 64.
        n_train: Training examples.
        n_val: Validation examples (also used for test and predict).
        batch_size: Batch size.
        num_workers: DataLoader workers.
        seed: Seed of the data (validation uses ``seed + 1``).

    Example::

        >>> dm = ShapesDataModule(image_size=32, n_train=64, n_val=32, batch_size=16)
        >>> dm.setup("fit")
        >>> x, factors = next(iter(dm.train_dataloader()))
        >>> x.shape, factors.shape
        (torch.Size([16, 1, 32, 32]), torch.Size([16, 5]))
        >>> import numpy as np
        >>> dm.render(dm.sample_factors(3, np.random.RandomState(0))).shape
        torch.Size([3, 1, 32, 32])
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES

    def __init__(
        self,
        image_size: ImageSize = 32,
        n_train: int = 20000,
        n_val: int = 2000,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n_train, self.n_val = check_int("n_train", n_train, low=1), check_int("n_val", n_val, low=1)
        self.batch_size, self.num_workers, self.seed = check_loader_args(batch_size, num_workers, seed)
        self.image_size = _check_image_size(image_size)
        self.data_shape = (1, image_size, image_size)
        self.train_set: ShapesDataset | None = None
        self.val_set: ShapesDataset | None = None

    def render(self, factors: np.ndarray | Tensor) -> Tensor:
        """The float images ``(n, 1, S, S)`` in {0, 1} of integer factors ``(n, 5)``, as in the data sets."""
        return render_shapes(torch.from_numpy(check_factors(factors, FACTOR_SIZES)), self.image_size).float()

    def setup(self, stage: str | None = None) -> None:
        hp = self
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = ShapesDataset(hp.n_train, hp.image_size, hp.seed)
        if self.val_set is None:
            self.val_set = ShapesDataset(hp.n_val, hp.image_size, hp.seed + 1)
