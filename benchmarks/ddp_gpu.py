"""Two-process DDP training of the conv VAE on GPUs, and the refusal of FSDP over two processes.

With two or more GPUs the processes get one GPU each (``ddp_spawn``, NCCL). With one GPU both processes share
it: NCCL refuses two ranks on one device, so the two processes join as two "nodes" of one device each over
gloo (the recipe of the two-node test, on 127.0.0.1). Either way the run trains a few steps, validates, and
every rank writes its encoder's weights; the script checks they are identical and the ELBO is finite.

    python benchmarks/ddp_gpu.py --steps 30 --out ddp.json
    python benchmarks/ddp_gpu.py --fsdp-refusal --out fsdp.json   # needs two GPUs

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
from pathlib import Path

import torch
import torch.multiprocessing as mp
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.strategies import DDPStrategy

from lightning_vae import VAE
from lightning_vae.data import ShapesDataModule
from lightning_vae.nets import ConvDecoder, ConvEncoder


class _Dump(Callback):
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, trainer: Trainer, pl_module: VAE) -> None:
        state = {k: v.detach().cpu() for k, v in pl_module.encoder.state_dict().items()}
        torch.save(state, Path(self.folder, f"encoder.rank{trainer.global_rank}.pt"))

    def setup(self, trainer: Trainer, pl_module: VAE, stage: str) -> None:
        # Lightning destroys the process group at exit for NCCL only; a gloo group left to the C++ static
        # destructors can abort a worker after a run that succeeded.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


#: "gpu"; "cpu" only to try the script's mechanics on a machine without one (--accelerator cpu).
ACCELERATOR = "gpu"


def _trainer(folder: str, steps: int, **kwargs: object) -> tuple[Trainer, VAE, ShapesDataModule]:
    seed_everything(0, verbose=False)
    dm = ShapesDataModule(image_size=64, n_train=2048, n_val=256, batch_size=32)
    vae = VAE(ConvEncoder(1, 64, 10), ConvDecoder(10, 1, 64), likelihood="bernoulli")
    trainer = Trainer(
        accelerator=ACCELERATOR,
        max_steps=steps,
        limit_val_batches=4,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=folder,
        callbacks=[_Dump(folder)],
        **kwargs,  # type: ignore[arg-type]
    )
    return trainer, vae, dm


def _shared_gpu_worker(rank: int, port: int, folder: str, steps: int, accelerator: str) -> None:
    # Node `rank` of two, one device each, both on cuda:0: the environment a two-node launch would give.
    global ACCELERATOR
    ACCELERATOR = accelerator
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank), LOCAL_RANK="0")
    trainer, vae, dm = _trainer(
        folder, steps, devices=1, num_nodes=2, strategy=DDPStrategy(process_group_backend="gloo")
    )
    trainer.fit(vae, datamodule=dm)
    if trainer.global_rank == 0:
        Path(folder, "metrics.json").write_text(json.dumps({k: float(v) for k, v in trainer.callback_metrics.items()}))


def ddp(steps: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        if torch.cuda.device_count() >= 2:
            mode = "two GPUs, NCCL (ddp_spawn)"
            trainer, vae, dm = _trainer(folder, steps, devices=2, strategy="ddp_spawn")
            trainer.fit(vae, datamodule=dm)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        else:
            mode = "two processes on one GPU, gloo (two one-device nodes on 127.0.0.1)"
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(_shared_gpu_worker, args=(port, folder, steps, ACCELERATOR), nprocs=2, join=True)
            metrics = json.loads(Path(folder, "metrics.json").read_text())
        seconds = time.perf_counter() - start
        ranks = [torch.load(Path(folder, f"encoder.rank{r}.pt")) for r in range(2)]
    identical = all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    finite = all(v == v and abs(v) != float("inf") for v in metrics.values())
    return {
        "mode": mode,
        "steps": steps,
        "seconds_with_startup": round(seconds, 1),
        "encoder_identical_on_both_ranks": identical,
        "metrics_finite": finite,
        "val/elbo": metrics.get("val/elbo"),
        "ok": identical and finite and "val/elbo" in metrics,
    }


def fsdp_refusal() -> dict[str, object]:
    if torch.cuda.device_count() < 2:
        return {"skipped": "needs two GPUs (FSDP over one process shards nothing and is accepted)"}
    with tempfile.TemporaryDirectory() as folder:
        trainer, vae, dm = _trainer(folder, 2, devices=2, strategy="fsdp")
        try:
            trainer.fit(vae, datamodule=dm)
        except ValueError as err:
            return {"refused": "strategy='ddp'" in str(err), "message": str(err)}
    return {"refused": False, "message": "FSDP over two processes trained: expected VAE.setup to refuse it"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--fsdp-refusal", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"], help="cpu: try the mechanics only")
    args = parser.parse_args()
    global ACCELERATOR
    ACCELERATOR = args.accelerator
    if ACCELERATOR == "gpu" and not torch.cuda.is_available():
        raise SystemExit("ddp_gpu.py needs a CUDA device")
    result = fsdp_refusal() if args.fsdp_refusal else ddp(args.steps)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    print(json.dumps(result), flush=True)
    if args.out and rank == 0:
        Path(args.out).write_text(json.dumps(result, indent=2))
    ok = result.get("ok", result.get("refused", "skipped" in result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
