"""ExactResume (callbacks/exact_resume.py): each training step's draws (torch, NumPy, random) come from the key of
(seed, epoch, rank, batch) and from nothing else, so two runs from the same weights agree whatever the global random
state was; the seed from seed_everything, the atomic checkpoint writer, the state a checkpoint keeps."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae.callbacks import ExactResume
from lightning_vae.checkpoints import AtomicCheckpointIO
from lightning_vae.data import TensorDataModule
from lightning_vae.data.common import batch_key


def _draws() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(4), np.random.rand(3), random.random()


def test_each_step_draws_from_the_key_of_seed_epoch_rank_and_batch() -> None:
    callback = ExactResume(seed=11)
    trainer = SimpleNamespace(current_epoch=3, global_rank=1)
    callback.on_train_batch_start(trainer, None, None, 5)
    got = _draws()
    key = batch_key(11, 3, 1, 5)
    expected_torch = torch.rand(4, generator=torch.Generator().manual_seed(key))
    torch.testing.assert_close(got[0], expected_torch, rtol=0, atol=0)
    np.testing.assert_array_equal(got[1], np.random.RandomState(key % 2**32).rand(3))
    assert got[2] == random.Random(key).random()
    _draws()  # whatever ran in between ...
    callback.on_train_batch_start(trainer, None, None, 5)
    again = _draws()  # ... the same step draws the same numbers
    assert torch.equal(again[0], got[0]) and np.array_equal(again[1], got[1]) and again[2] == got[2]
    for other in (SimpleNamespace(current_epoch=4, global_rank=1), SimpleNamespace(current_epoch=3, global_rank=0)):
        callback.on_train_batch_start(other, None, None, 5)
        assert not torch.equal(torch.rand(4), got[0])
    callback.on_train_batch_start(trainer, None, None, 6)
    assert not torch.equal(torch.rand(4), got[0])


def test_two_runs_from_the_same_weights_agree_whatever_the_global_random_state(tmp_path: Path) -> None:
    data = torch.rand(32, 1, 8, 8).round()
    start = tiny_vae().state_dict()

    def run(global_seed: int, callbacks: list) -> dict:
        vae = tiny_vae()
        vae.load_state_dict(start)
        torch.manual_seed(global_seed)  # the global state differs between the runs
        trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=callbacks))
        trainer.fit(vae, datamodule=TensorDataModule(data, batch_size=8))
        return vae.state_dict()

    first, second = run(0, [ExactResume(seed=5)]), run(1, [ExactResume(seed=5)])
    assert all(torch.equal(first[k], second[k]) for k in first)
    third = run(1, [])  # without the callback the reparameterisation noise differs: the test can tell
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_the_seed_defaults_to_seed_everythings_and_the_writer_becomes_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")
    callback = ExactResume()
    trainer = Trainer(**trainer_kwargs(tmp_path, callbacks=[callback]))
    assert type(trainer.strategy.checkpoint_io) is TorchCheckpointIO
    callback.setup(trainer, tiny_vae(), "fit")
    assert callback.seed == 42 and isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    monkeypatch.delenv("PL_GLOBAL_SEED")
    unseeded = ExactResume()
    unseeded.setup(trainer, tiny_vae(), "fit")
    assert unseeded.seed == 0

    class OwnWriter(TorchCheckpointIO):
        pass

    own = Trainer(**trainer_kwargs(tmp_path, plugins=[OwnWriter()]))
    ExactResume(seed=1).setup(own, tiny_vae(), "fit")
    assert type(own.strategy.checkpoint_io) is OwnWriter  # a writer the user chose is kept


def test_the_seed_is_kept_in_the_checkpoint() -> None:
    callback = ExactResume(seed=7)
    assert callback.state_dict() == {"seed": 7}
    resumed = ExactResume(seed=None)
    resumed.load_state_dict({"seed": 7})
    assert resumed.seed == 7
    older = ExactResume(seed=3)
    older.load_state_dict({})  # a checkpoint without the record keeps the given seed
    assert older.seed == 3
    assert pickle.loads(pickle.dumps(callback)).seed == 7


@pytest.mark.parametrize("seed", [1.5, "1", True])
def test_a_seed_that_is_not_an_int_is_refused(seed) -> None:
    with pytest.raises(TypeError, match=r"Expected `seed` to be an int, got "):
        ExactResume(seed=seed)
