"""Free bits: gradient semantics of each mode (Kingma et al. 2016, batch-averaged before the clamp), the FreeBits
callback on the VAE (mode, schedule of λ, logged λ and raw KL), and argument validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from support.annealing import MemoryLogger, Recorder, UserVAE, binary_images
from support.modules import tiny_vae, trainer_kwargs
from torch.distributions import Normal, kl_divergence

from lightning_vae.callbacks import FreeBits
from lightning_vae.data import TensorDataModule
from lightning_vae.functional import gaussian_kl
from lightning_vae.objective import free_bits_penalty


def _penalty_and_grad(loc: torch.Tensor, lam: float, mode: str, groups: int = 1) -> tuple[float, torch.Tensor]:
    """The free-bits KL term of q = N(loc, 1) against N(0, 1), and its gradient with respect to loc."""
    loc = loc.clone().requires_grad_(True)
    log_var = torch.zeros_like(loc)
    elementwise = gaussian_kl(loc, log_var)
    penalty = free_bits_penalty(elementwise.sum(-1), elementwise, lam, mode, groups)  # type: ignore[arg-type]
    penalty.backward()
    assert loc.grad is not None
    return penalty.item(), loc.grad


# Two examples, four latent dimensions. The KL of N(m, 1) from N(0, 1) is m^2 / 2, so with
#   dim 0: KL 0.08 and 0.32   -> batch mean 0.2
#   dim 1: KL 1.0 and 1.0     -> batch mean 1.0
#   dim 2: KL 0.02 and 1.28   -> batch mean 0.65 (one example under 0.5 nats, the mean above)
#   dim 3: KL 0.5 and 1.62    -> batch mean 1.06
LOC = torch.tensor([[0.4, 2.0**0.5, 0.2, 1.0], [0.8, -(2.0**0.5), 1.6, 1.8]], dtype=torch.float64)
MEAN_KL = torch.tensor([0.2, 1.0, 0.65, 1.06], dtype=torch.float64)


def test_reference_kl_of_the_fixture() -> None:
    reference = kl_divergence(Normal(LOC, 1.0), Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(reference, MEAN_KL)


def test_dim_mode_clamps_the_batch_averaged_kl_of_each_dimension() -> None:
    value, grad = _penalty_and_grad(LOC, 0.5, "dim")
    assert value == pytest.approx(0.5 + 1.0 + 0.65 + 1.06)  # sum_d max(0.5, mean KL_d)
    full = LOC / LOC.shape[0]  # d/d loc of mean_b loc^2 / 2
    torch.testing.assert_close(grad[:, 0], torch.zeros(2, dtype=torch.float64))  # under λ: no gradient
    torch.testing.assert_close(grad[:, 1:], full[:, 1:])
    # Dimension 2: example 0 alone is under λ, the batch mean is not, so example 0 still gets its gradient
    # (a per-example clamp would give it none).
    assert grad[0, 2] != 0


def test_group_mode_clamps_each_group_sum() -> None:
    # groups of dims (0, 1) and (2, 3): sums 1.2 and 1.71; λ = 1.5 holds the first group, not the second
    value, grad = _penalty_and_grad(LOC, 1.5, "group", groups=2)
    assert value == pytest.approx(1.5 + 0.65 + 1.06)
    torch.testing.assert_close(grad[:, :2], torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(grad[:, 2:], LOC[:, 2:] / 2)


@pytest.mark.parametrize(("lam", "held"), [(3.0, True), (2.5, False)])
def test_total_mode_clamps_the_total_kl(lam: float, held: bool) -> None:
    total = float(MEAN_KL.sum())  # 2.91
    value, grad = _penalty_and_grad(LOC, lam, "total")
    assert value == pytest.approx(max(lam, total))
    torch.testing.assert_close(grad, torch.zeros_like(LOC) if held else LOC / 2)


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
        ({"free_bits": -0.5}, ValueError, r"Expected `free_bits` to be a finite float >= 0 \(nats\), got -0.5"),
        ({"free_bits": float("nan")}, ValueError, r"Expected `free_bits` to be a finite float >= 0 \(nats\), got nan"),
        ({"mode": "example"}, ValueError, r"Expected `mode` to be one of \('dim', 'group', 'total'\) or None"),
        ({"groups": 0}, ValueError, r"Expected `groups` to be a positive int or None, got 0"),
        ({"end": 0.0}, ValueError, r"Expected `end` to be None with schedule='constant'"),
        ({"schedule": "linear"}, ValueError, r"Expected `end` \(the final λ in nats\) for schedule='linear', got None"),
        ({"schedule": "linear", "end": -1.0}, ValueError, r"Expected `end` to be a finite float >= 0 \(nats\)"),
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
    with pytest.raises(ValueError, match=r"FreeBits applies to the single-sample ELBO, got .* n_samples=2"):
        Trainer(**trainer_args, callbacks=[FreeBits(0.5)]).fit(tiny_vae(n_samples=2), dm)

    class NoMode(UserVAE):
        def __init__(self) -> None:
            super().__init__()
            del self.free_bits_mode

    with pytest.raises(TypeError, match=r"FreeBits needs .* a string attribute .* `free_bits_mode`"):
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
