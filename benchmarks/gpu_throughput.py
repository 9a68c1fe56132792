"""Training throughput on one GPU: `VAE` vs the same loss in a minimal LightningModule vs a hand-written loop, in
float32, bf16-mixed and 16-mixed.

The companion of `benchmarks/throughput.py` (which measures the CPU) for the two reference models: the
MNIST-shaped MLP 784-400-20 (batch 128) and the conv VAE on 64x64 shapes (batch 64), Bernoulli likelihood,
Adam 1e-3. All three contenders use the package's networks (`MLPEncoder`/`MLPDecoder`, `ConvEncoder`/
`ConvDecoder`) and the same pinned-memory loader; the minimal module and the loop compute the ELBO by hand (its
terms in float32 under autocast, as the package does), so `VAE / lightning` is this package's own cost and
`lightning / plain` Lightning's. Under a precision the Trainers get `precision=...` and the loop the same autocast
(and, for 16-mixed, a `GradScaler`). The MLP data are random binary images of MNIST's shape (throughput does not
depend on the pixels; no download on the GPU machine).

Each run trains `--warmup` untimed steps, then `--steps` timed steps between two device synchronisations; the
contenders rotate run by run and medians are reported. The figures are written to `--out` after every model and
precision, so a run stopped by a time limit keeps what it measured.

    python benchmarks/gpu_throughput.py --runs 3 --steps 300 --out gpu_throughput.json
    python benchmarks/gpu_throughput.py --accelerator cpu --runs 1 --steps 2 --warmup 1   # rehearse on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.data.shapes import ShapesDataset
from lightning_vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

MODELS: dict[str, dict[str, Any]] = {
    "mlp": {
        "nets": lambda: (MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,))),
        "batch_size": 128,
        "n_data": 16384,
    },
    "conv": {"nets": lambda: (ConvEncoder(1, 64, 10), ConvDecoder(10, 1, 64)), "batch_size": 64, "n_data": 8192},
}
#: The Trainer precisions measured, and the autocast type the hand-written loop uses for each.
PRECISIONS: dict[str, torch.dtype | None] = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

#: "gpu"; "cpu" only to rehearse the script on a machine without one (--accelerator cpu).
ACCELERATOR = "gpu"


def _device() -> torch.device:
    return torch.device("cuda" if ACCELERATOR == "gpu" else "cpu")


def _sync() -> None:
    if ACCELERATOR == "gpu":
        torch.cuda.synchronize()


def _data(model: str, n: int) -> TensorDataset:
    if model == "mlp":
        return TensorDataset(torch.bernoulli(torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))))
    return TensorDataset(ShapesDataset(n, image_size=64).images)


def _loader(dataset: TensorDataset, batch_size: int) -> DataLoader:
    workers = 2 if ACCELERATOR == "gpu" else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=ACCELERATOR == "gpu",
        persistent_workers=workers > 0,
    )


def _elbo_loss(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    loc, log_var = (t.float() for t in encoder(x))
    z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
    logits = decoder(z).float()
    recon = F.binary_cross_entropy_with_logits(logits.flatten(1), x.flatten(1), reduction="none").sum(-1)
    kl = 0.5 * (torch.exp(log_var) + loc.pow(2) - 1.0 - log_var).sum(-1)
    return (recon + kl).mean()


class _Minimal(LightningModule):
    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return _elbo_loss(self.encoder, self.decoder, batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class _Timer(Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            _sync()
            self.start = time.perf_counter()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _sync()
        self.seconds = time.perf_counter() - self.start


def _precision_args(precision: str) -> dict[str, Any]:
    """The Trainer's precision arguments (Lightning refuses `precision="16-mixed"` on a CPU: a plugin there)."""
    if precision == "16-mixed" and ACCELERATOR == "cpu":
        return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]}
    return {"precision": precision}


def _run_trainer(module: LightningModule, loader: DataLoader, steps: int, warmup: int, precision: str) -> float:
    timer = _Timer(warmup)
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator=ACCELERATOR,
            devices=1,
            max_steps=warmup + steps,
            max_epochs=-1,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=root,
            callbacks=[timer],
            **_precision_args(precision),
        )
        trainer.fit(module, train_dataloaders=loader)
    return steps * loader.batch_size / timer.seconds  # type: ignore[operator]


def run_vae(model: str, loader: DataLoader, steps: int, warmup: int, precision: str) -> float:
    seed_everything(0, verbose=False)
    encoder, decoder = MODELS[model]["nets"]()
    return _run_trainer(VAE(encoder, decoder, likelihood="bernoulli"), loader, steps, warmup, precision)


def run_minimal(model: str, loader: DataLoader, steps: int, warmup: int, precision: str) -> float:
    seed_everything(0, verbose=False)
    return _run_trainer(_Minimal(*MODELS[model]["nets"]()), loader, steps, warmup, precision)


def run_plain(model: str, loader: DataLoader, steps: int, warmup: int, precision: str) -> float:
    seed_everything(0, verbose=False)
    device = _device()
    encoder, decoder = (net.to(device) for net in MODELS[model]["nets"]())
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None

    def autocast() -> AbstractContextManager[Any]:
        return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)

    done, start = 0, 0.0
    while done < warmup + steps:
        for (x,) in loader:
            if done == warmup:
                _sync()
                start = time.perf_counter()
            with autocast():
                loss = _elbo_loss(encoder, decoder, x.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            done += 1
            if done == warmup + steps:
                break
    _sync()
    return steps * loader.batch_size / (time.perf_counter() - start)  # type: ignore[operator]


def _write(path: str | None, results: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (rotating order)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps per run before the timed ones")
    parser.add_argument("--models", nargs="+", default=["mlp", "conv"], choices=sorted(MODELS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--n-data", type=int, default=None, help="examples per model (default 16384 / 8192)")
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"], help="cpu: rehearse the mechanics")
    parser.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    global ACCELERATOR
    ACCELERATOR = args.accelerator
    if ACCELERATOR == "gpu" and not torch.cuda.is_available():
        raise SystemExit("gpu_throughput.py needs a CUDA device (--accelerator cpu rehearses it on the CPU)")
    contenders: list[tuple[str, Callable[..., float]]] = [
        ("VAE", run_vae),
        ("lightning", run_minimal),
        ("plain", run_plain),
    ]
    device = torch.cuda.get_device_name(0) if ACCELERATOR == "gpu" else "cpu (rehearsal: not a measurement)"
    results: dict[str, Any] = {"device": device, "torch": torch.__version__, "models": {}}
    for model in args.models:
        spec = MODELS[model]
        loader = _loader(_data(model, args.n_data or spec["n_data"]), spec["batch_size"])
        results["models"][model] = {}
        for precision in args.precisions:
            if precision == "bf16-mixed" and ACCELERATOR == "gpu" and not torch.cuda.is_bf16_supported():
                results["models"][model][precision] = {"skipped": "bfloat16 not supported on this GPU"}
                continue
            for _name, fn in contenders if ACCELERATOR == "gpu" else ():  # untimed: CUDA context, cuDNN autotuning
                fn(model, loader, 2, 1, precision)
            samples: dict[str, list[float]] = {name: [] for name, _ in contenders}
            for i in range(args.runs):
                for name, fn in contenders[i % 3 :] + contenders[: i % 3]:
                    samples[name].append(fn(model, loader, args.steps, args.warmup, precision))
                    print(f"{model} {precision} run {i + 1} {name:9s}: {samples[name][-1]:9.0f} samples/s", flush=True)
            med = {name: statistics.median(v) for name, v in samples.items()}
            ratios = {
                "VAE / plain": med["VAE"] / med["plain"],
                "lightning / plain": med["lightning"] / med["plain"],
                "VAE / lightning": med["VAE"] / med["lightning"],
            }
            print(
                f"{model} {precision}: medians "
                + ", ".join(f"{k} {v:.0f}" for k, v in med.items())
                + " samples/s; "
                + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()),
                flush=True,
            )
            results["models"][model][precision] = {"samples_per_s": samples, "medians": med, "ratios": ratios}
            _write(args.out, results)
    _write(args.out, results)


if __name__ == "__main__":
    main()
