"""Checkpoint files (checkpoints.py): atomic writes that leave the previous file whole when a write fails, with the
mode a plain open() gives; the migration of older weight names; and safe reads whose errors name the file and what
is wrong with it. (Hostile and corrupt files in whole runs: tests/faults/.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_vae.checkpoints import AtomicCheckpointIO, load_checkpoint, migrate_state_dict


def _checkpoint(value: float = 1.0) -> dict:
    return {"state_dict": {"model.encoder.weight": torch.full((2, 2), value)}, "epoch": 3}


def test_an_atomic_write_gives_the_file_torch_save_writes_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(2.0), target)
    loaded = torch.load(target, weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["model.encoder.weight"], torch.full((2, 2), 2.0))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary file left
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint(_checkpoint(1.0), target)
    before = target.read_bytes()

    def fail(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint(_checkpoint(5.0), target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_remote_paths_go_to_lightnings_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", lambda self, c, p, s=None: calls.append(str(p)))
    AtomicCheckpointIO().save_checkpoint(_checkpoint(), "s3://bucket/last.ckpt")
    assert calls == ["s3://bucket/last.ckpt"]


def test_older_weight_names_move_under_the_model() -> None:
    old = {
        "state_dict": {
            "encoder.net.weight": torch.ones(1),
            "decoder.net.bias": torch.zeros(1),
            "likelihood.log_scale": torch.zeros(()),
            "prior.loc": torch.zeros(2),
            "eval_metrics.x": torch.ones(1),
        }
    }
    migrate_state_dict(old)
    assert list(old["state_dict"]) == [
        "model.encoder.net.weight",
        "model.decoder.net.bias",
        "model.likelihood.log_scale",
        "model.prior.loc",
        "eval_metrics.x",  # not a network: left where it was
    ]
    current = {"state_dict": {"model.encoder.w": torch.ones(1), "objective.gamma": torch.ones(1)}}
    migrate_state_dict(current)
    assert list(current["state_dict"]) == ["model.encoder.w", "objective.gamma"]
    for other in ({}, {"state_dict": None}, {"state_dict": {"other.w": torch.ones(1)}}):
        snapshot = dict(other)
        migrate_state_dict(other)
        assert other == snapshot


def test_a_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ok.ckpt"
    torch.save(_checkpoint(4.0), path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["model.encoder.weight"], torch.full((2, 2), 4.0))


class _Payload:
    """A pickled object of a user class: a weights-only load refuses it."""


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, r"Expected a checkpoint file, got '.*model\.ckpt': no such file"),
        (lambda p: p.write_bytes(b""), r"'.*model\.ckpt' is empty \(0 bytes\), not a checkpoint"),
        (lambda p: p.write_bytes(b"hello world"), r"\(11 bytes\) is not a PyTorch checkpoint \(.* b'hell'\)"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), r"not a Lightning checkpoint: no `state_dict` \(found"),
        (lambda p: torch.save(torch.zeros(2), p), r"no `state_dict` \(found Tensor\)"),
        (lambda p: torch.save({"state_dict": {}, "x": _Payload()}, p), r"holds objects that a weights-only load"),
    ],
    ids=["missing", "empty", "text", "no_state_dict", "a_tensor", "pickled_object"],
)
def test_what_is_not_a_checkpoint_is_named(write, message: str, tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    if write is not None:
        write(path)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


def test_a_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.randn(256, 256)}}, whole)
    cut = tmp_path / "cut.ckpt"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"'.*cut\.ckpt' \({len(data) // 2} bytes\) is truncated or corrupt"):
        load_checkpoint(cut)
