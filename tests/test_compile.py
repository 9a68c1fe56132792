"""torch.compile of the encoder and decoder: same numbers as eager, trains, checkpoints load into eager networks."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import tiny_vae, trainer_kwargs
from lightning.pytorch import Trainer

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule


def test_compiled_networks_match_eager_and_train(tmp_path: Path) -> None:
    eager = tiny_vae()
    compiled = tiny_vae(compile=True)
    compiled.load_state_dict(eager.state_dict())  # same parameter names: compiled in place
    x, z = torch.rand(8, 1, 8, 8).round(), torch.randn(8, 4)
    torch.testing.assert_close(compiled.encode(x).mean, eager.encode(x).mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled.decode(z), eager.decode(z), rtol=1e-5, atol=1e-5)

    dm = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=16)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(compiled, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    reloaded = VAE.load_from_checkpoint(path, compile=False)
    torch.testing.assert_close(reloaded.decode(z), compiled.decode(z), rtol=1e-5, atol=1e-5)
