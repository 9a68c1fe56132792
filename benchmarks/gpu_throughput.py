"""Training throughput on one GPU: `VAE` vs the same loss in a minimal LightningModule vs a hand-written loop.

The companion of `benchmarks/throughput.py` (which measures the CPU) for the two reference models: the
MNIST-shaped MLP 784-400-20 (batch 128) and the conv VAE on 64x64 shapes (batch 64), Bernoulli likelihood,
Adam 1e-3. All three contenders use the package's networks (`MLPEncoder`/`MLPDecoder`, `ConvEncoder`/
`ConvDecoder`) and the same pinned-memory loader; the minimal module and the loop compute the ELBO by hand,
so `VAE / lightning` is this package's own cost and `lightning / plain` Lightning's. The MLP data are random
binary images of MNIST's shape (throughput does not depend on the pixels; no download on the GPU machine).

Each run trains `--warmup` untimed steps, then `--steps` timed steps between two `torch.cuda.synchronize()`;
the contenders rotate run by run and medians are reported.

    python benchmarks/gpu_throughput.py --runs 3 --steps 300 --out gpu_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.data.shapes import ShapesDataset
from lightning_vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

MODELS: dict[str, dict[str, Any]] = {
    "mlp": {
        "nets": lambda: (MLPEncoder((1, 28, 28), 20, (400,)), MLPDecoder(20, (1, 28, 28), (400,))),
        "batch_size": 128,
    },
    "conv": {"nets": lambda: (ConvEncoder(1, 64, 10), ConvDecoder(10, 1, 64)), "batch_size": 64},
}


def _data(model: str, n: int) -> TensorDataset:
    if model == "mlp":
        return TensorDataset(torch.bernoulli(torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))))
    return TensorDataset(ShapesDataset(n, image_size=64).images)


def _loader(dataset: TensorDataset, batch_size: int) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=2, pin_memory=True, persistent_workers=True
    )


def _elbo_loss(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    loc, log_var = encoder(x)
    z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
    logits = decoder(z)
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
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def _run_trainer(module: LightningModule, loader: DataLoader, steps: int, warmup: int) -> float:
    timer = _Timer(warmup)
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator="gpu",
            devices=1,
            max_steps=warmup + steps,
            max_epochs=-1,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=root,
            callbacks=[timer],
        )
        trainer.fit(module, train_dataloaders=loader)
    return steps * loader.batch_size / timer.seconds  # type: ignore[operator]


def run_vae(model: str, loader: DataLoader, steps: int, warmup: int) -> float:
    seed_everything(0, verbose=False)
    encoder, decoder = MODELS[model]["nets"]()
    return _run_trainer(VAE(encoder, decoder, likelihood="bernoulli"), loader, steps, warmup)


def run_minimal(model: str, loader: DataLoader, steps: int, warmup: int) -> float:
    seed_everything(0, verbose=False)
    return _run_trainer(_Minimal(*MODELS[model]["nets"]()), loader, steps, warmup)


def run_plain(model: str, loader: DataLoader, steps: int, warmup: int) -> float:
    seed_everything(0, verbose=False)
    device = torch.device("cuda")
    encoder, decoder = (net.to(device) for net in MODELS[model]["nets"]())
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    done, start = 0, 0.0
    while done < warmup + steps:
        for (x,) in loader:
            if done == warmup:
                torch.cuda.synchronize()
                start = time.perf_counter()
            loss = _elbo_loss(encoder, decoder, x.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == warmup + steps:
                break
    torch.cuda.synchronize()
    return steps * loader.batch_size / (time.perf_counter() - start)  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (rotating order)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps per run before the timed ones")
    parser.add_argument("--models", nargs="+", default=["mlp", "conv"], choices=sorted(MODELS))
    parser.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_throughput.py needs a CUDA device")
    contenders: list[tuple[str, Callable[..., float]]] = [
        ("VAE", run_vae),
        ("lightning", run_minimal),
        ("plain", run_plain),
    ]
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "models": {}}
    for model in args.models:
        loader = _loader(_data(model, 16384 if model == "mlp" else 8192), MODELS[model]["batch_size"])
        for _name, fn in contenders:  # one untimed round: CUDA context, cuDNN autotuning, lazy imports
            fn(model, loader, 10, 5)
        samples: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for i in range(args.runs):
            for name, fn in contenders[i % 3 :] + contenders[: i % 3]:
                samples[name].append(fn(model, loader, args.steps, args.warmup))
                print(f"{model} run {i + 1} {name:9s}: {samples[name][-1]:9.0f} samples/s", flush=True)
        med = {name: statistics.median(v) for name, v in samples.items()}
        ratios = {
            "VAE / plain": med["VAE"] / med["plain"],
            "lightning / plain": med["lightning"] / med["plain"],
            "VAE / lightning": med["VAE"] / med["lightning"],
        }
        print(
            f"{model}: medians "
            + ", ".join(f"{k} {v:.0f}" for k, v in med.items())
            + " samples/s; "
            + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
        )
        results["models"][model] = {"samples_per_s": samples, "medians": med, "ratios": ratios}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
