"""Callbacks that a killed-and-resumed CLI run loads by class path (not a test module)."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from lightning.pytorch import Callback


class BetaRecorder(Callback):
    """Append ``{"step", "beta"}`` of every training batch to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "beta": pl_module.beta}) + "\n")


class KillAt(Callback):
    """SIGKILL this process at the start of training step ``step`` (mid-epoch), or in the middle of writing the
    checkpoint of step ``during_save`` (after half of its bytes)."""

    def __init__(self, step: int = -1, during_save: int = -1) -> None:
        self.step, self.during_save = step, during_save

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        if trainer.global_step != self.during_save:
            return
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f: Any) -> None:
                self.f = f

            def __enter__(self) -> HalfWriter:
                return self

            def __exit__(self, *exc: Any) -> None:
                self.f.close()

            def write(self, data: Any) -> None:
                data = bytes(data)
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        os.fdopen = lambda fd, mode="r", *a, **k: HalfWriter(real_fdopen(fd, mode, *a, **k))  # type: ignore
