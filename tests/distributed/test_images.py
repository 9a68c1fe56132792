"""Under DDP the views draw once per validation epoch, from global rank zero, and training runs on both ranks."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from support.modules import DestroyProcessGroupAtExit, trainer_kwargs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

from lightning_vae import VAE
from lightning_vae.callbacks import LatentTraversalLogger, PriorSampleLogger, ReconstructionLogger, TensorBoardDashboard
from lightning_vae.data import ShapesDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder


def test_views_under_ddp_spawn_write_one_image_per_epoch(tmp_path: Path) -> None:
    shape = (1, 28, 28)
    model = VAE(MLPEncoder(shape, latent_dim=4, hidden_sizes=(16,)), MLPDecoder(4, shape, hidden_sizes=(16,)))
    data = ShapesDataModule(image_size=28, n_train=128, n_val=64, batch_size=16)
    callbacks = [ReconstructionLogger(n_images=8), PriorSampleLogger(n_images=8), LatentTraversalLogger(n_dims=2)]
    trainer = Trainer(
        **trainer_kwargs(
            tmp_path,
            strategy="ddp_spawn",
            devices=2,
            logger=TensorBoardLogger(tmp_path, name="tb", version=0),
            callbacks=[*callbacks, TensorBoardDashboard(), DestroyProcessGroupAtExit()],
        )
    )
    trainer.fit(model, data)
    log_dir = Path(tmp_path, "tb", "version_0")
    accumulator = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    accumulator.Reload()
    for tag in ("images/reconstructions", "images/samples", "images/traversals"):
        steps = [e.step for e in accumulator.Images(tag)]
        assert len(steps) == 2 and len(set(steps)) == 2, (tag, steps)  # one grid per validation epoch
    (events_file,) = log_dir.glob("events.out.tfevents.*")  # only rank zero writes
    tags = [v.tag for event in LegacyEventFileLoader(str(events_file)).Load() for v in event.summary.value]
    assert tags.count("_hparams_/session_start_info") == 1 and tags.count("_hparams_/session_end_info") == 1
