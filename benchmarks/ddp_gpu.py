"""Two-process DDP training on GPUs against one process, and the refusal of FSDP over two processes.

One process trains a VAE on a global batch of 64; two processes train the same VAE on 32 examples each (the same
examples in the same order: no shuffling, Lightning's distributed sampler). The encoder's "samples" are its means,
so no random draw differs between the two runs, and plain SGD keeps a rounding difference in a tiny gradient from
growing (Adam's first steps move every weight by about its learning rate). The script checks that the two ranks end
with identical weights and that they equal one process's weights and validation values to float32 rounding.

With two or more GPUs the processes get one GPU each (``ddp_spawn``, NCCL). With one GPU both processes share it:
NCCL refuses two ranks on one device, so the two processes join as two "nodes" of one device each over gloo (the
recipe of the two-node test, on 127.0.0.1).

    python benchmarks/ddp_gpu.py --steps 20 --out ddp.json
    python benchmarks/ddp_gpu.py --fsdp-refusal --out fsdp.json   # needs two GPUs
    python benchmarks/ddp_gpu.py --accelerator cpu --steps 3      # rehearse the mechanics on a CPU

With ``--fsdp-refusal`` the Trainer launches the script again for the second process (Lightning's FSDP
launcher); each process expects VAE.setup to refuse FSDP with several processes.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import socket
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule
from lightning_vae.data.shapes import ShapesDataset
from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.nets import MLPDecoder

SIDE, LATENT, GLOBAL_BATCH, N_TRAIN, N_VAL = 32, 8, 64, 1024, 96
#: Relative and absolute tolerance between one process and two (float32 sums in another order, on a GPU).
RTOL, ATOL = 1e-4, 1e-6


class _MeanSample(DiagonalGaussian):
    """A diagonal Gaussian whose samples are its mean: one process and two ranks draw nothing that could differ."""

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        z = self.loc.expand(torch.Size(sample_shape) + self.loc.shape)
        self._last_sample = None
        return z


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 128), nn.Tanh(), nn.Linear(128, 2 * LATENT))
        self.latent_dim = LATENT

    def forward(self, x: torch.Tensor) -> _MeanSample:
        loc, log_var = self.net(x).chunk(2, -1)
        return _MeanSample(loc, log_var)


class _Dump(Callback):
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, trainer: Trainer, pl_module: VAE) -> None:
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        torch.save(state, Path(self.folder, f"weights.rank{trainer.global_rank}.pt"))

    def setup(self, trainer: Trainer, pl_module: VAE, stage: str) -> None:
        # Lightning destroys the process group at exit for NCCL only; a gloo group left to the C++ static
        # destructors can abort a worker after a run that succeeded.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


#: "gpu"; "cpu" only to rehearse the script's mechanics on a machine without one (--accelerator cpu).
ACCELERATOR = "gpu"


def _trainer(folder: str, steps: int, processes: int, **kwargs: Any) -> tuple[Trainer, VAE, TensorDataModule]:
    seed_everything(0, verbose=False)
    images = ShapesDataset(N_TRAIN + N_VAL, image_size=SIDE).images
    dm = TensorDataModule(images[:N_TRAIN], val=images[N_TRAIN:], batch_size=GLOBAL_BATCH // processes, shuffle=False)
    sgd = partial(torch.optim.SGD, lr=0.05)
    vae = VAE(_Encoder(), MLPDecoder(LATENT, (1, SIDE, SIDE), (128,)), likelihood="bernoulli", optimizer=sgd)
    trainer = Trainer(
        accelerator=ACCELERATOR,
        max_steps=steps,
        limit_val_batches=None,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=folder,
        callbacks=[_Dump(folder)],
        **kwargs,
    )
    return trainer, vae, dm


def _metrics(trainer: Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def _shared_device_worker(rank: int, port: int, folder: str, steps: int, accelerator: str) -> None:
    # Node `rank` of two, one device each, both on device 0: the environment a two-node launch would give.
    global ACCELERATOR
    ACCELERATOR = accelerator
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank), LOCAL_RANK="0")
    strategy = DDPStrategy(process_group_backend="gloo")
    trainer, vae, dm = _trainer(folder, steps, 2, devices=1, num_nodes=2, strategy=strategy)
    trainer.fit(vae, datamodule=dm)
    if trainer.global_rank == 0:
        Path(folder, "metrics.json").write_text(json.dumps(_metrics(trainer)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest ``|a - b| / (ATOL + RTOL |a|)`` over every weight: at most 1 where they agree to tolerance."""
    return max(float(((a[k] - b[k]).abs() / (ATOL + RTOL * a[k].abs())).max()) for k in a if a[k].is_floating_point())


def ddp(steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as one_folder, tempfile.TemporaryDirectory() as folder:
        trainer, vae, dm = _trainer(one_folder, steps, 1, devices=1)
        trainer.fit(vae, datamodule=dm)
        one_metrics = _metrics(trainer)
        one = torch.load(Path(one_folder, "weights.rank0.pt"))
        start = time.perf_counter()
        if ACCELERATOR == "gpu" and torch.cuda.device_count() >= 2:
            mode = "two GPUs, NCCL (ddp_spawn)"
            trainer, vae, dm = _trainer(folder, steps, 2, devices=2, strategy="ddp_spawn")
            trainer.fit(vae, datamodule=dm)
            metrics = _metrics(trainer)
        else:
            device = "one GPU" if ACCELERATOR == "gpu" else "the CPU (rehearsal)"
            mode = f"two processes on {device}, gloo (two one-device nodes on 127.0.0.1)"
            mp.spawn(_shared_device_worker, args=(_free_port(), folder, steps, ACCELERATOR), nprocs=2, join=True)
            metrics = json.loads(Path(folder, "metrics.json").read_text())
        seconds = time.perf_counter() - start
        ranks = [torch.load(Path(folder, f"weights.rank{r}.pt")) for r in range(2)]
    identical = all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    worst = _largest_difference(one, ranks[0])
    metric_worst = max(abs(metrics[k] - v) / (ATOL + RTOL * abs(v)) for k, v in one_metrics.items())
    finite = all(v == v and abs(v) != float("inf") for v in metrics.values())
    same_keys = set(metrics) == set(one_metrics) and "val/elbo" in metrics
    return {
        "mode": mode,
        "steps": steps,
        "global_batch": GLOBAL_BATCH,
        "seconds_with_startup": round(seconds, 1),
        "weights_identical_on_both_ranks": identical,
        "weights_vs_one_process": f"largest difference {worst:.3g} of the tolerance (rtol {RTOL}, atol {ATOL})",
        "val_vs_one_process": f"largest difference {metric_worst:.3g} of the tolerance",
        "val/elbo": {"one process": one_metrics.get("val/elbo"), "two processes": metrics.get("val/elbo")},
        "ok": identical and finite and same_keys and worst <= 1.0 and metric_worst <= 1.0,
    }


def fsdp_refusal() -> dict[str, Any]:
    if ACCELERATOR != "gpu" or torch.cuda.device_count() < 2:
        return {"skipped": "needs two GPUs (FSDP over one process shards nothing and is accepted)"}
    with tempfile.TemporaryDirectory() as folder:
        trainer, vae, dm = _trainer(folder, 2, 2, devices=2, strategy="fsdp")
        try:
            trainer.fit(vae, datamodule=dm)
        except ValueError as err:
            return {"refused": "strategy='ddp'" in str(err), "message": str(err)}
    return {"refused": False, "message": "FSDP over two processes trained: expected VAE.setup to refuse it"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fsdp-refusal", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"], help="cpu: rehearse the mechanics")
    args = parser.parse_args()
    global ACCELERATOR
    ACCELERATOR = args.accelerator
    if ACCELERATOR == "gpu" and not torch.cuda.is_available():
        raise SystemExit("ddp_gpu.py needs a CUDA device (--accelerator cpu rehearses it on the CPU)")
    result = fsdp_refusal() if args.fsdp_refusal else ddp(args.steps)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    print(json.dumps(result), flush=True)
    if args.out and rank == 0:
        Path(args.out).write_text(json.dumps(result, indent=2))
    ok = result.get("ok", result.get("refused", "skipped" in result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
