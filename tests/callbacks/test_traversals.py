"""LatentTraversalLogger: rows follow the most active dimensions, images match a NumPy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from support.images import LATENT, decode_png, events, fit, last_image, quantize, reference_grid, stacked_vae
from support.modules import trainer_kwargs

from lightning_vae.callbacks import LatentTraversalLogger, PriorSampleLogger, ReconstructionLogger
from lightning_vae.callbacks.views import latent_traversal
from lightning_vae.data import TensorDataModule


def test_traversal_rows_follow_the_most_active_dimensions(tmp_path: Path) -> None:
    view = LatentTraversalLogger(n_dims=3, n_steps=5, limit=2.0, n_examples=64)
    trainer, model, data = fit(tmp_path, [view])
    model.eval()
    x = data.val_set.images[:64]
    means = model.encode(x).mean.detach().double().numpy()
    variance = means.var(axis=0, ddof=1)  # NumPy reference of Var_x E_q[z_d]
    dims = np.argsort(-variance, kind="stable")[:3]
    text = events(trainer).Tensors("images/traversals_dims/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("rows, top to bottom: ") and [int(t.split()[0][1:]) for t in text[21:].split(", ")] == list(
        dims
    )

    values = np.linspace(-2.0, 2.0, 5)
    z = np.repeat(means[:1], 15, axis=0).reshape(3, 5, LATENT)
    for row, d in enumerate(dims):
        z[row, :, d] = values
    with torch.no_grad():
        expected = model.likelihood.mean(model.decode(torch.from_numpy(z.reshape(15, LATENT)).float()))
    reference = quantize(torch.from_numpy(reference_grid(expected.numpy(), 5, 2, 1.0)))
    assert np.abs(last_image(events(trainer), "images/traversals").astype(int) - reference.astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------- several latent groups
def test_traversal_logger_on_a_stacked_model_writes_a_grid_per_group(tmp_path: Path) -> None:
    images = torch.rand(32, 1, 4, 4).round()
    logger = CSVLogger(tmp_path, name="csv", version=0)
    views = [LatentTraversalLogger(n_dims=2, n_steps=5, n_examples=16), LatentTraversalLogger(group="z1", tag="t/z1")]
    views += [PriorSampleLogger(n_images=6, nrow=3), ReconstructionLogger(n_images=4, nrow=2)]
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=logger, callbacks=views))
    trainer.fit(stacked_vae().train(), datamodule=TensorDataModule(images, val=images, batch_size=16))
    folder = Path(logger.log_dir)
    top = decode_png(next((folder / "images/traversals").glob("*.png")).read_bytes())
    assert top.shape[:2] == (2 * (4 + 2) + 2, 5 * (4 + 2) + 2)  # 2 rows of 5 images of 4x4, 2-pixel padding
    assert next((folder / "images/traversals").glob("*.txt")).read_text().startswith("rows, top to bottom: z2[")
    assert next((folder / "t/z1").glob("*.txt")).read_text().count("z1[") == 4  # every dimension of z1
    assert decode_png(next((folder / "images/samples").glob("*.png")).read_bytes()).shape[:2] == (14, 20)
    assert decode_png(next((folder / "images/reconstructions").glob("*.png")).read_bytes()).shape[:2] == (26, 14)
    with pytest.raises(ValueError, match=r"`group` of LatentTraversalLogger to be one of .*\('z2', 'z1'\), got 'z3'"):
        Trainer(**trainer_kwargs(tmp_path, callbacks=[LatentTraversalLogger(group="z3")])).validate(
            stacked_vae(), datamodule=TensorDataModule(images, val=images, batch_size=16), verbose=False
        )
    with pytest.raises(TypeError, match=r"Expected `group` to be a latent group's name or None, got 1 \(int\)"):
        LatentTraversalLogger(group=1)  # type: ignore[arg-type]


def test_a_conditional_model_is_traversed_at_one_class() -> None:
    from lightning_vae.models import ConditionalVAEModel
    from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder

    model = ConditionalVAEModel(
        ConditionalMLPEncoder((1, 4, 4), 3, 2, (8,)), ConditionalMLPDecoder(2, 3, (1, 4, 4), (8,)), n_classes=3
    )
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    images, dims, activity = latent_traversal(
        model, x, n_dims=2, n_steps=3, limit=2.0, context=y, condition=torch.tensor(2)
    )
    with torch.no_grad():
        loc, _ = model.encoder(x, torch.eye(3)[y])  # the activity of q(z | x, y), each example with its own label
        expected_activity = loc.var(0)  # the variance over the examples (unbiased, as the activity statistic)
        torch.testing.assert_close(activity, expected_activity)
        start = loc[0]
        z = start.repeat(6, 1)
        for row, d in enumerate(dims.tolist()):
            z[row * 3 : row * 3 + 3, d] = torch.linspace(-2.0, 2.0, 3)
        expected = torch.sigmoid(model.decoder(z, torch.eye(3)[[2] * 6])).view(6, 1, 4, 4)  # all at class 2
    torch.testing.assert_close(images, expected)
