"""A run killed with SIGKILL (mid-epoch, or while writing a checkpoint) and resumed with ``--ckpt_path=last``
ends with bit-identical weights and the same β at every step as the run that was never interrupted.

Real subprocesses of the ``lightning-vae`` command, the main job's config with the cyclical annealing config added.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
MAX_STEPS = 23  # 2.3 epochs of 10 batches


def _run(tmp: Path, name: str, *extra: str, resume: bool = False) -> subprocess.CompletedProcess:
    folder = tmp / name
    args = [
        sys.executable,
        "-m",
        "lightning_vae.cli",
        "fit",
        "--config",
        str(ROOT / "configs/cli/shapes.yaml"),
        "--config",
        str(ROOT / "configs/cli/annealing/cyclical.yaml"),
        "--data.init_args.n_train=160",
        "--data.init_args.n_val=32",
        "--data.init_args.batch_size=16",
        f"--trainer.max_steps={MAX_STEPS}",
        "--trainer.max_epochs=-1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={folder}",  # checkpoints in {folder}/checkpoints
        "--checkpoint.every_n_train_steps=2",
        "--trainer.callbacks+=support.kill.BetaRecorder",
        f"--trainer.callbacks.path={folder}/beta.jsonl",
        *extra,
    ]
    if resume:
        args.append("--ckpt_path=last")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    return subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _betas(path: Path) -> dict[int, float]:
    return {r["step"]: r["beta"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("runs")
    done = _run(tmp, "full")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "full"


@pytest.mark.parametrize(
    "kill",
    [
        "--trainer.callbacks+=support.kill.KillAt --trainer.callbacks.step=13",
        "--trainer.callbacks+=support.kill.KillAt --trainer.callbacks.during_save=14",
    ],
    ids=["mid-epoch", "during-checkpoint-write"],
)
def test_sigkill_then_resume_is_bit_identical(uninterrupted: Path, tmp_path: Path, kill: str) -> None:
    killed = _run(tmp_path, "run", *kill.split())
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    folder = tmp_path / "run"
    if "during_save" in kill:  # what the cut write left: a temporary file, and the step-14 checkpoint of its future
        assert any(p.name.endswith(".tmp") for p in (folder / "checkpoints").iterdir())
    last = torch.load(folder / "checkpoints/last.ckpt", weights_only=True)  # complete, loadable
    assert last["global_step"] == 12  # the checkpoint before the kill (steps 14's write was cut in half)
    resumed = _run(tmp_path, "run", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # nothing of the killed run is left: no half-written temporary file, no checkpoint of its lost future
    left = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert left == sorted(p.name for p in (uninterrupted / "checkpoints").iterdir()), left
    assert not any(name.endswith(".tmp") or "-v1" in name for name in left), left
    # last.ckpt holds the last step (23 is not a multiple of every_n_train_steps=2)
    assert torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == MAX_STEPS

    full, ours = _weights(uninterrupted / "checkpoints/last.ckpt"), _weights(folder / "checkpoints/last.ckpt")
    assert full.keys() == ours.keys()
    for key in full:
        assert torch.equal(full[key], ours[key]), f"{key} differs after resume"
    betas_full, betas_ours = _betas(uninterrupted / "beta.jsonl"), _betas(folder / "beta.jsonl")
    assert sorted(betas_full) == list(range(MAX_STEPS))
    assert all(betas_ours[step] == betas_full[step] for step in betas_full), "β differs at some step"


def test_the_last_steps_are_saved_when_every_n_train_steps_does_not_divide_them(tmp_path: Path) -> None:
    """10 steps, a checkpoint every 4: last.ckpt holds step 10, not 8 (the entry points' callbacks)."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from support.modules import tiny_vae, trainer_kwargs

    from lightning_vae.cli.runs import entry_point_callbacks
    from lightning_vae.data import TensorDataModule

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_last=True)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_steps=10, max_epochs=-1, limit_val_batches=0, enable_checkpointing=True),
        callbacks=[checkpoint, *entry_point_callbacks()],
    )
    trainer.fit(tiny_vae(), datamodule=TensorDataModule(torch.rand(24, 1, 8, 8).round(), batch_size=4))
    last = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 10 and checkpoint.last_model_path == str(tmp_path / "checkpoints/last.ckpt")


def test_what_an_interrupted_run_left_is_removed_on_resume(tmp_path: Path) -> None:
    """A run stopped after writing step 6 (and a cut write's temporary file) is resumed from step 4 in the same
    folder: the checkpoints of its lost future and the temporary file go, and the resumed run's files take their
    names (no ``-v1`` copies beside stale ones)."""
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from support.modules import tiny_vae, trainer_kwargs

    from lightning_vae.callbacks import ExactResume
    from lightning_vae.data import TensorDataModule

    class Stop(Exception):
        pass

    class StopAt(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 7:
                raise Stop

    folder = tmp_path / "checkpoints"

    def run(*callbacks: Callback, ckpt_path: Path | None = None) -> None:
        checkpoint = ModelCheckpoint(dirpath=folder, filename="{step}", every_n_train_steps=2, save_top_k=-1,
                                     save_last=True)  # fmt: skip
        trainer = Trainer(
            **trainer_kwargs(tmp_path, max_steps=8, max_epochs=-1, limit_val_batches=0, enable_checkpointing=True),
            callbacks=[checkpoint, ExactResume(seed=0), *callbacks],
        )
        x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)).round()
        data = TensorDataModule(x, batch_size=4)
        try:
            trainer.fit(tiny_vae(), datamodule=data, ckpt_path=ckpt_path)
        except Stop:
            pass

    run(StopAt())
    (folder / ".last.ckpt.k2j4x9a1.tmp").write_bytes(b"half a checkpoint")
    assert sorted(p.name for p in folder.iterdir()) == [
        ".last.ckpt.k2j4x9a1.tmp", "last.ckpt", "step=2.ckpt", "step=4.ckpt", "step=6.ckpt",
    ]  # fmt: skip
    run(ckpt_path=folder / "step=4.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step=2.ckpt", "step=4.ckpt", "step=6.ckpt",
                                                        "step=8.ckpt"]  # fmt: skip
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 8
