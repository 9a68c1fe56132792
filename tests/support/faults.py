"""Callbacks and data of the fault tests that run in spawned DDP workers (they must be importable there)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightning.pytorch import Callback

from lightning_vae.data import TensorDataModule


def data_with_nan(n: int, index: int, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0) -> torch.Tensor:
    """``n`` binary examples, example ``index`` holding one NaN."""
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed)).round()
    x[index, 0, 0, 0] = float("nan")
    return x


def nan_on_one_rank(batch_size: int = 2, n: int = 16) -> TensorDataModule:
    """Training data in the order DDP shards it (rank r takes examples r, r + 2, ...): example 5 holds a NaN, so the
    second batch of rank 1 (global step 1) is non-finite and rank 0's is not."""
    x = data_with_nan(n, 5)
    return TensorDataModule(x, val=x[:4].nan_to_num(), batch_size=batch_size, shuffle=False)


class RecordSteps(Callback):
    """Each rank's parameters and optimizer state around every training step, and the guard's counts, saved to
    ``{path}.rank{r}`` at the end of training."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.before: dict[int, Any] = {}
        self.after: dict[int, Any] = {}

    def _state(self, trainer: Any, pl_module: Any) -> Any:
        params = [p.detach().clone() for p in pl_module.parameters()]
        return params, copy.deepcopy(trainer.optimizers[0].state_dict()["state"])

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.before[trainer.global_step] = self._state(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.after[trainer.global_step - 1] = self._state(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        torch.save(
            {
                "before": self.before,
                "after": self.after,
                "skipped": pl_module.guard.skipped_total,
                "state_dict": {k: v.clone() for k, v in pl_module.state_dict().items()},
                "steps": trainer.global_step,
            },
            f"{self.path}.rank{trainer.global_rank}",
        )


class RecordEncoder(Callback):
    """The encoder's weights and the aggressive callback's inner-step count, saved to ``{path}.rank{r}``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        from lightning_vae.callbacks import AggressiveEncoderTraining

        aggressive = next(c for c in trainer.callbacks if isinstance(c, AggressiveEncoderTraining))
        torch.save(
            {
                "encoder": {k: v.clone() for k, v in pl_module.encoder.state_dict().items()},
                "inner_steps": aggressive.inner_steps_total,
                "steps": trainer.global_step,
            },
            f"{self.path}.rank{trainer.global_rank}",
        )


def same_state(a: Any, b: Any) -> bool:
    """Whether two ``(parameters, optimizer state)`` snapshots are equal."""
    params_a, opt_a = a
    params_b, opt_b = b
    same = all(torch.equal(x, y) for x, y in zip(params_a, params_b))
    return (
        same
        and opt_a.keys() == opt_b.keys()
        and all(torch.equal(opt_a[k][n], opt_b[k][n]) for k in opt_a for n in opt_a[k])
    )
