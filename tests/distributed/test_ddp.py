"""DDP on CPU gives the numbers of one process; a two-node launch through torchrun trains and checkpoints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from support.modules import DestroyProcessGroupAtExit, DeterministicEncoder, PlainDecoder, trainer_kwargs
from support.paths import ROOT

from lightning_vae import VAE
from lightning_vae.callbacks import PosteriorCollapseMonitor
from lightning_vae.data import TensorDataModule

N_TRAIN, N_VAL, GLOBAL_BATCH = 64, 21, 16  # 21 validation examples: uneven shards (11 + 10) and last batches


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (
        torch.rand(N_TRAIN, 1, 8, 8, generator=generator).round(),
        torch.rand(N_VAL, 1, 8, 8, generator=generator).round(),
    )


def _fit(tmp_path: Path, devices: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    seed_everything(0)
    train, val = _data()
    # The same global batch: one process takes 16, each of two ranks takes 8 (DistributedSampler, no shuffle).
    dm = TensorDataModule(train, val=val, batch_size=GLOBAL_BATCH // devices, shuffle=False)
    # SGD, not Adam: Adam's first steps move every weight by about ±lr whatever the gradient's size, so
    # float32 rounding differences in near-zero gradients would be amplified to ~1e-4 (measured).
    sgd = partial(torch.optim.SGD, lr=0.05)
    vae = VAE(DeterministicEncoder(), PlainDecoder(), likelihood="bernoulli", n_eval_samples=3, optimizer=sgd)
    extra = {"strategy": "ddp_spawn", "devices": 2} if devices == 2 else {}
    monitor = PosteriorCollapseMonitor(iw_samples=3, log_images=False)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=None, limit_val_batches=None, **extra),
        num_sanity_val_steps=0,
        callbacks=[monitor, DestroyProcessGroupAtExit()],
    )
    trainer.fit(vae, datamodule=dm)
    # collapse/mutual_info is left out: its estimator is defined within each batch (He et al. 2019), and the
    # batches of one process and of two ranks hold different examples. Its reduction is tested in tests/metrics.
    keep = ("val/", "collapse/active_units", "collapse/collapsed_dims", "collapse/nll_iw")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(keep)}
    return metrics, {k: v.detach().clone() for k, v in vae.state_dict().items()}


def test_ddp_spawn_matches_one_process(tmp_path: Path) -> None:
    one, weights_one = _fit(tmp_path / "one", devices=1)
    two, weights_two = _fit(tmp_path / "two", devices=2)
    expected = {"val/elbo", "val/kl", "val/recon", "val/loss", "val/nll_iw", "val/bits_per_dim"}
    expected |= {"collapse/active_units", "collapse/collapsed_dims", "collapse/nll_iw"}
    assert set(one) == set(two) >= expected
    for key in one:
        # Tolerance: float32 summation order differs between one process and two ranks (gradient all-reduce).
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-5), key
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_validation_visits_every_example_once_per_epoch(tmp_path: Path) -> None:
    """The validation mean over 21 examples equals the hand-computed mean of per-example losses."""
    seed_everything(0)
    _, val = _data()
    vae = VAE(DeterministicEncoder(), PlainDecoder(), likelihood="bernoulli")
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None))
    dm = TensorDataModule(val, val=val, batch_size=4)
    result = trainer.validate(vae, datamodule=dm, verbose=False)[0]
    with torch.no_grad():
        per_example = torch.stack([vae.compute_terms(x.unsqueeze(0))[0].elbo for x in val])
    assert result["val/elbo"] == pytest.approx(float(per_example.mean()), rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_torchrun_train_and_checkpoint(tmp_path: Path) -> None:
    """Two torchrun launches (node ranks 0 and 1) on 127.0.0.1 form one job of world size 2."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for node_rank in (0, 1):
        cmd = [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node_rank}",
            "--master-addr=127.0.0.1", f"--master-port={port}",
            "-m", "lightning_vae.cli", "fit", "--config=configs/cli/shapes.yaml",
            "--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp",
            "--trainer.max_steps=3", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
            "--data.init_args.n_train=256", "--data.init_args.n_val=64",
            f"--trainer.default_root_dir={tmp_path}",  # checkpoints in {tmp_path}/checkpoints
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in outputs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    checkpoints = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    assert len(checkpoints) == 2 and checkpoints[-1] == "last.ckpt", checkpoints  # best and last, written by rank 0
    loaded = VAE.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert loaded.encoder.latent_dim == 10
