"""Mixed precision through the Trainer: bf16-mixed on CPU trains without NaN and ends near float32; GPU cases."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from support.modules import trainer_kwargs

from lightning_vae import VAE
from lightning_vae.data import MNISTDataModule, ShapesDataModule
from lightning_vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _mnist_mlp() -> VAE:
    return VAE(MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,)), likelihood="bernoulli")


def _shapes_conv() -> VAE:
    return VAE(ConvEncoder(1, 32, 10), ConvDecoder(10, 1, 32), likelihood="bernoulli")


def _train(tmp_path: Path, model_fn, dm, precision: str, steps: int, **extra) -> tuple[float, float]:
    seed_everything(0)
    model = model_fn()
    if "plugins" not in extra:
        extra["precision"] = precision
    trainer = Trainer(
        **trainer_kwargs(
            tmp_path / precision, max_steps=steps, max_epochs=-1, limit_train_batches=None, limit_val_batches=8, **extra
        ),
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    return float(trainer.callback_metrics["val/elbo"]), float(trainer.callback_metrics["val/kl"])


# Tolerance: the same seed and data in both precisions; float32 and bf16-mixed then differ only by bf16
# rounding in the networks (the objective runs in float32). Measured: 0.07% (MNIST MLP, -205.32 vs -205.18)
# and 0.12% (shapes conv, -239.08 vs -239.37); 1% leaves room for other CPUs' bf16 kernels.
REL_TOL = 0.01


def test_bf16_mixed_on_cpu_trains_the_mnist_mlp_near_float32(tmp_path: Path, mnist_dir: Path) -> None:
    dm = MNISTDataModule(str(mnist_dir), batch_size=128, val_size=1024, train_subset=4096, binarize="static")
    elbo32, kl32 = _train(tmp_path, _mnist_mlp, dm, "32-true", 40)
    elbo16, kl16 = _train(tmp_path, _mnist_mlp, dm, "bf16-mixed", 40)
    print(f"MNIST MLP: float32 ELBO {elbo32:.3f}, bf16-mixed ELBO {elbo16:.3f}")
    assert math.isfinite(elbo16) and math.isfinite(kl16)
    assert elbo16 == pytest.approx(elbo32, rel=REL_TOL)
    assert elbo32 > -250  # it did learn (untrained: about -543)


def test_bf16_mixed_on_cpu_trains_the_conv_shapes_vae_near_float32(tmp_path: Path) -> None:
    dm = ShapesDataModule(image_size=32, n_train=1024, n_val=256, batch_size=32)
    elbo32, _ = _train(tmp_path, _shapes_conv, dm, "32-true", 20)
    elbo16, kl16 = _train(tmp_path, _shapes_conv, dm, "bf16-mixed", 20)
    print(f"shapes conv: float32 ELBO {elbo32:.3f}, bf16-mixed ELBO {elbo16:.3f}")
    assert math.isfinite(elbo16) and math.isfinite(kl16)
    assert elbo16 == pytest.approx(elbo32, rel=REL_TOL)


# 16-mixed: float16 overflows above 65504. GradScaler's default initial scale, 2^16, times this model's largest
# initial gradient (about 403, a weight gradient of the conv VAE) overflows, and each overflowing step is skipped
# while the scale halves: 2^16 -> 2^7 is 9 skipped steps of 30, which no 1% tolerance against float32 survives.
# Starting at 2^6 (403 * 64 = 25,800, a factor 2.5 under the limit) no step is skipped: the test checks that, so
# a failure says whether the scale or the arithmetic is at fault. Scaled gradients below float16's smallest
# subnormal (6e-8), i.e. true gradients below 1e-9, flush to zero: nothing the ELBO after 30 steps can show.
FP16_INIT_SCALE = 2.0**6


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_gpu(tmp_path: Path, precision: str) -> None:
    from lightning.pytorch.plugins.precision import MixedPrecision

    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    dm = ShapesDataModule(image_size=32, n_train=2048, n_val=512, batch_size=64)
    elbo32, _ = _train(tmp_path, _shapes_conv, dm, "32-true", 30, accelerator="gpu")
    extra: dict = {"accelerator": "gpu"}
    scaler = None
    if precision == "16-mixed":
        scaler = torch.amp.GradScaler("cuda", init_scale=FP16_INIT_SCALE)
        extra["plugins"] = [MixedPrecision("16-mixed", "cuda", scaler=scaler)]
    elbo_mixed, kl_mixed = _train(tmp_path, _shapes_conv, dm, precision, 30, **extra)
    if scaler is not None:
        assert scaler.get_scale() == FP16_INIT_SCALE, f"steps were skipped for overflow: scale {scaler.get_scale()}"
    assert math.isfinite(elbo_mixed) and math.isfinite(kl_mixed)
    assert elbo_mixed == pytest.approx(elbo32, rel=REL_TOL)


@pytest.mark.gpu
@requires_cuda
def test_fsdp_on_one_gpu_trains_a_conv_vae_with_rank_zero_callbacks(tmp_path: Path) -> None:
    """FSDP on one process shards nothing: it trains, and callbacks that call the networks on rank zero work.

    With several processes VAE.setup refuses FSDP (tests/distributed/test_sharding.py; the real refusal on two
    GPUs is in benchmarks/gpu_check.sh).
    """
    from lightning_vae.callbacks import PosteriorCollapseMonitor, ReconstructionLogger

    dm = ShapesDataModule(image_size=64, n_train=512, n_val=128, batch_size=32)
    model = VAE(ConvEncoder(1, 64, 10), ConvDecoder(10, 1, 64))
    callbacks = [ReconstructionLogger(n_images=8), PosteriorCollapseMonitor(iw_samples=4, log_images=False)]
    trainer = Trainer(
        **trainer_kwargs(tmp_path, accelerator="gpu", devices=1, max_steps=5, limit_val_batches=2),
        strategy="fsdp",
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=dm)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert math.isfinite(float(trainer.callback_metrics["collapse/nll_iw"]))


@pytest.mark.gpu
@requires_cuda
def test_compile_on_gpu_matches_eager(tmp_path: Path) -> None:
    """torch.compile (inductor) of the conv VAE on the GPU: the same ELBO as eager after the same steps."""
    dm = ShapesDataModule(image_size=32, n_train=1024, n_val=256, batch_size=64)
    eager, _ = _train(tmp_path / "eager", _shapes_conv, dm, "32-true", 20, accelerator="gpu")

    def compiled() -> VAE:
        return VAE(ConvEncoder(1, 32, 10), ConvDecoder(10, 1, 32), likelihood="bernoulli", compile=True)

    fast, _ = _train(tmp_path / "compiled", compiled, dm, "32-true", 20, accelerator="gpu")
    assert fast == pytest.approx(eager, rel=REL_TOL)  # fused kernels round differently; a wrong graph is far off
