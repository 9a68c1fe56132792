"""The FreeBits callback on the VAE (mode, schedule of λ, logged λ and raw KL, no KL gradient under λ), reloads and
argument validation. The gradient of each mode of ``free_bits_penalty`` is tested in ``tests/test_objective.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from support.annealing import MemoryLogger, Recorder, UserVAE, binary_images
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae import VAE
from lightning_vae.callbacks import FreeBits
from lightning_vae.checks import choices
from lightning_vae.data import TensorDataModule
from lightning_vae.objective import FreeBitsMode

#: The allowed modes as the message shows them: the names of the FreeBitsMode Literal, as a regex.
MODES = re.escape(str(choices(FreeBitsMode)))


@pytest.mark.parametrize("mode", ["dim", "group", "total"])
def test_free_bits_above_the_kl_remove_the_kl_gradient_from_the_encoder(tmp_path: Path, mode: str) -> None:
    # Through the callback and the VAE: with λ far above every KL, the loss differs from the reconstruction
    # term by a constant, so the encoder's gradient is the reconstruction's alone.
    vae = tiny_vae(latent_dim=4)
    dm = TensorDataModule(binary_images(64), batch_size=32)
    callback = FreeBits(100.0, mode=mode, groups=2 if mode == "group" else None)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_steps=1, max_epochs=-1, limit_val_batches=0, callbacks=[callback]))
    trainer.fit(vae, dm)
    assert vae.free_bits == 100.0 and vae.free_bits_mode == mode
    x = binary_images(32, seed=1)

    def encoder_grad(term: str) -> list[torch.Tensor]:
        vae.zero_grad()
        torch.manual_seed(3)
        terms, _ = vae.compute_terms(x)
        getattr(terms, term).backward()
        return [p.grad.clone() for p in vae.encoder.parameters()]

    for a, b in zip(encoder_grad("loss"), encoder_grad("recon")):
        torch.testing.assert_close(a, b)
    vae.free_bits = 0.0  # and without free bits the KL term does reach the encoder
    assert any(not torch.allclose(a, b) for a, b in zip(encoder_grad("loss"), encoder_grad("recon")))


def test_free_bits_callback_on_the_vae_schedules_and_logs_lambda(tmp_path: Path) -> None:
    rec, logger = Recorder(), MemoryLogger()
    callback = FreeBits(40.0, mode="total", schedule="linear", end=20.0, length=4)
    vae = tiny_vae()
    dm = TensorDataModule(binary_images(256), batch_size=32)
    kwargs = dict(max_steps=6, max_epochs=-1, limit_val_batches=0, logger=logger, log_every_n_steps=1)
    Trainer(**trainer_kwargs(tmp_path, callbacks=[callback, rec], **kwargs)).fit(vae, dm)
    expected = [40.0, 35.0, 30.0, 25.0, 20.0, 20.0]
    assert rec.column("free_bits") == expected
    assert set(rec.column("free_bits_mode")) == {"total"}
    assert list(logger.series("train/free_bits").values()) == pytest.approx(expected)
    # train/kl is the raw KL (a few nats), and the loss holds the clamped one: recon + 1 * max(λ, KL) = recon + λ
    for step, metrics in enumerate(logger.steps[s] for s in sorted(logger.steps)):
        assert metrics["train/kl"] < expected[step]
        assert metrics["train/loss"] == pytest.approx(metrics["train/recon"] + expected[step], rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"free_bits": -0.5}, ValueError, r"Expected `free_bits` to be a finite float >= 0, got -0.5"),
        ({"free_bits": float("nan")}, ValueError, r"Expected `free_bits` to be a finite float, got nan"),
        ({"free_bits": "0.5"}, TypeError, r"Expected `free_bits` to be a finite float, got '0.5' \(str\)"),
        ({"mode": "example"}, ValueError, rf"Expected `mode` to be one of {MODES}, got 'example'"),
        ({"mode": 1}, TypeError, rf"Expected `mode` to be one of {MODES}, got 1 \(int\)"),
        ({"groups": 0}, ValueError, r"Expected `groups` to be an int >= 1, got 0"),
        ({"groups": 2.0}, TypeError, r"Expected `groups` to be an int, got 2.0 \(float\)"),
        ({"end": 0.0}, ValueError, r"Expected `end` to be None with schedule='constant'"),
        ({"schedule": "linear"}, ValueError, r"Expected `end` \(the final λ in nats\) for schedule='linear', got None"),
        ({"schedule": "linear", "end": -1.0}, ValueError, r"Expected `end` to be a finite float >= 0, got -1.0"),
        ({"schedule": "linear", "end": 0.0, "length": 0}, ValueError, r"Expected `length` to be an int >= 1, got 0"),
        ({"interval": "batch"}, ValueError, r"Expected `interval` to be one of \('step', 'epoch'\), got 'batch'"),
    ],
)
def test_arguments_are_validated(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        FreeBits(**kwargs)


def test_modules_that_cannot_take_free_bits_are_rejected(tmp_path: Path) -> None:
    dm = TensorDataModule(binary_images(64), batch_size=32)
    trainer_args = trainer_kwargs(tmp_path, max_steps=1, max_epochs=-1, limit_val_batches=0)
    expected = r"Expected `n_samples` to be 1 for FreeBits \(.* single-sample ELBO\), got 2; set n_samples=1"
    with pytest.raises(ValueError, match=expected):
        Trainer(**trainer_args, callbacks=[FreeBits(0.5)]).fit(tiny_vae(n_samples=2), dm)

    class NoMode(UserVAE):
        def __init__(self) -> None:
            super().__init__()
            del self.free_bits_mode

    expected = r"^FreeBits needs `free_bits_mode` on the module, and NoMode has no `free_bits_mode`\. FreeBits works"
    with pytest.raises(TypeError, match=expected):
        Trainer(**trainer_args, callbacks=[FreeBits(0.5, mode="total")]).fit(NoMode(), dm)


def test_state_key_and_schedule_of_an_epoch_decay() -> None:
    cb = FreeBits(2.0, schedule="cosine", end=0.0, length=10, interval="epoch")
    assert cb.state_key == "FreeBits"
    assert cb.schedule(0) == 2.0 and cb.schedule(5) == pytest.approx(1.0) and cb.schedule(10) == 0.0
    assert FreeBits(0.25).schedule(10**6) == 0.25  # constant by default


def test_a_reloaded_model_has_the_free_bits_the_callback_set(tmp_path) -> None:
    from lightning_vae import VAE

    vae = tiny_vae(free_bits=0.0)
    trainer = Trainer(**trainer_kwargs(tmp_path, callbacks=[FreeBits(0.1)], max_epochs=1))
    trainer.fit(vae, datamodule=TensorDataModule(torch.rand(16, 1, 8, 8), batch_size=8))
    trainer.save_checkpoint(tmp_path / "fb.ckpt")
    assert VAE.load_from_checkpoint(tmp_path / "fb.ckpt").free_bits == pytest.approx(0.1)


def test_the_run_records_the_free_bits_it_trained_with(tmp_path: Path) -> None:
    # VAE(free_bits=0.0) trained under FreeBits(0.1): hparams.yaml, the checkpoint and the reloaded module all say 0.1.
    logger = CSVLogger(tmp_path, name="run")
    x = torch.rand(16, 1, 8, 8).round()
    trainer = Trainer(
        default_root_dir=tmp_path, accelerator="cpu", max_epochs=1, limit_val_batches=0, logger=logger,
        callbacks=[FreeBits(0.1)], enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(tiny_vae(free_bits=0.0), TensorDataModule(x, batch_size=8))
    assert yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())["free_bits"] == 0.1
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["free_bits"] == 0.1
    assert VAE.load_from_checkpoint(ckpt).free_bits == 0.1
