"""ReconstructionLogger (callbacks/reconstructions.py): the first validation examples, gathered across batches, in rows
each over the row of their reconstructions, short rows filled white, the value range mapped to black..white; nothing
drawn before a validation has seen examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from support.images import decode_png, quantize, reference_grid
from support.modules import trainer_kwargs

from lightning_vae import VAE
from lightning_vae.callbacks import ReconstructionLogger
from lightning_vae.data import TensorDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder


def _vae() -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder((1, 4, 4), 2, hidden_sizes=(8,)), MLPDecoder(2, (1, 4, 4), hidden_sizes=(8,)))


def test_the_grid_is_rows_of_inputs_each_over_its_reconstructions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.rand(12, 1, 4, 4).round()
    view = ReconstructionLogger(n_images=5, nrow=3, value_range=(0.0, 2.0), tag="views/recon")
    logger = CSVLogger(tmp_path, name="csv", version=0)
    kwargs = trainer_kwargs(tmp_path, max_epochs=1, logger=logger, callbacks=[view], limit_val_batches=3)
    trainer = Trainer(**kwargs, num_sanity_val_steps=0)  # see test_image_view.py's sanity-check test
    vae = _vae()
    trainer.fit(vae, datamodule=TensorDataModule(images, val=images, batch_size=2))
    torch.testing.assert_close(view._fixed, images[:5], rtol=0, atol=0)  # batches of 2: 2 + 2 + 1 examples
    vae.eval()
    with torch.no_grad():
        recon = vae.reconstruct(images[:5])
    white = torch.full((1, 1, 4, 4), 2.0)  # the top of the value range
    rows = torch.cat([images[:3], recon[:3], images[3:5], white, recon[3:5], white])
    reference = quantize(torch.from_numpy(reference_grid((rows / 2.0).numpy(), 3, 2, 1.0)))  # (0, 2) -> (0, 1)
    (png,) = (Path(logger.log_dir) / "views" / "recon").glob("*.png")
    got = decode_png(png.read_bytes())
    assert got.shape == (2 + 4 * (4 + 2), 2 + 3 * (4 + 2), 1)
    assert np.abs(got.astype(int) - reference.astype(int)).max() <= 1


def test_nothing_is_drawn_without_validation_examples(tmp_path: Path) -> None:
    view = ReconstructionLogger(n_images=4)
    logger = CSVLogger(tmp_path, name="csv", version=0)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=logger, callbacks=[view]))
    view.draw(trainer, _vae())  # no validation batch seen yet
    assert view._fixed is None and not list(tmp_path.rglob("*.png"))


def test_the_defaults() -> None:
    view = ReconstructionLogger()
    assert (view.n_examples, view.nrow, view.every_n_epochs, view.tag) == (16, 8, 1, "images/reconstructions")
    assert tuple(view.value_range) == (0.0, 1.0) and view.needs == ("reconstruct",)
