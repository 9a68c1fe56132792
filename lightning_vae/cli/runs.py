"""What the command-line entry points share: the data a checkpoint was trained on, the end of a short run, the summary.

``lightning-vae`` (LightningCLI) and ``lightning-vae-hydra`` both

- validate at the last step of a run whose ``max_steps`` ends inside an epoch (:class:`ValidateAtMaxSteps`), so
  that a short run still gets its validation metrics, image views, projector and best checkpoint;
- record the run's progress where the main process can read it back after ``ddp_spawn`` (:class:`RunProgress`),
  and pin each logger's folder before the workers start (:func:`pin_logger_versions`);
- print :func:`summarize` at the end of ``fit``.

``validate``, ``test`` and ``predict`` with ``--ckpt_path`` and no data find the data module the checkpoint was
trained on with :func:`checkpoint_data_config`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_vae.viz import find_tensorboard_logger

#: Key under which :class:`RunProgress` leaves the run's progress in ``trainer.callback_metrics``.
PROGRESS_KEY = "_lightning_vae/progress"


class ValidateAtMaxSteps(Callback):
    """Run the validation loop at the last training step when ``max_steps`` ends the run inside an epoch.

    Lightning validates at the end of each epoch (with the default ``val_check_interval=1.0``); a run stopped by
    ``max_steps`` before the end of its epoch would otherwise end without any validation: no ``val/...`` metrics,
    no image views or projector, no checkpoint by ``val/loss``. The callback moves that epoch's validation check to
    the batch of the last step. Runs that validate on their own schedule (an explicit ``val_check_interval``,
    ``check_val_every_n_epoch=None``) and runs that end at an epoch boundary are left as they are.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(max_steps=3, callbacks=[ValidateAtMaxSteps()], logger=False)
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if getattr(trainer.fit_loop, "restarted_mid_epoch", False):  # resumed inside an epoch
            self._move_check(trainer, done_in_epoch=trainer.fit_loop.epoch_loop.batch_progress.current.completed)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._move_check(trainer, done_in_epoch=0)

    @staticmethod
    def _move_check(trainer: Trainer, done_in_epoch: int) -> None:
        batches = trainer.num_training_batches
        if trainer.max_steps is None or trainer.max_steps < 0 or not isinstance(batches, int) or batches <= 0:
            return
        if trainer.check_val_every_n_epoch is None or trainer.val_check_batch != batches:
            return  # validation on the user's own schedule
        if (trainer.current_epoch + 1) % trainer.check_val_every_n_epoch != 0:
            return
        last = done_in_epoch + (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
        if 0 < last < batches:
            trainer.val_check_batch = last  # batch index last - 1 satisfies (batch_idx + 1) % last == 0


class SaveLastSteps(Callback):
    """Write ``last.ckpt`` at the end of ``fit`` when the run's last steps were not saved.

    A ``ModelCheckpoint`` saving every ``every_n_train_steps`` steps saves nothing at the end of an epoch or of the
    run, so the steps after the last multiple (3 of a 23-step run saving every 4) were lost, and a resumed run
    started before them. For each ``ModelCheckpoint`` with ``save_last``, the state at the end of training is
    written to its ``last`` file (and recorded as its ``last_model_path``) unless a checkpoint of that step was
    already written.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(max_steps=3, callbacks=[SaveLastSteps()], logger=False)
    """

    def __init__(self) -> None:
        self.saved_step: int | None = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.saved_step == trainer.global_step or getattr(trainer, "fast_dev_run", False):
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
                path = os.path.join(callback.dirpath, f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
                trainer.save_checkpoint(path)  # every rank calls it; rank zero writes
                callback.last_model_path = path


class RunProgress(Callback):
    """Leave the run's progress (steps, batches, batches per epoch) in ``trainer.callback_metrics`` at the end of fit.

    ``callback_metrics`` is what Lightning sends back from ``ddp_spawn`` workers to the main process, where the
    trainer's own counters stay at zero; :func:`summarize` reads the record when it is there.
    """

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches = trainer.num_training_batches
        per_epoch = float(batches) if isinstance(batches, (int, float)) else math.inf
        done = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        trainer.callback_metrics[PROGRESS_KEY] = torch.tensor(
            [float(trainer.global_step), float(done), per_epoch], dtype=torch.float64
        )


def entry_point_callbacks() -> list[Callback]:
    """The callbacks both entry points add to every trainer.

    :class:`ValidateAtMaxSteps`, :class:`RunProgress`, :class:`SaveLastSteps` (``last.ckpt`` holds the run's
    last step), and :class:`~lightning_vae.callbacks.ExactResume` (each step's random draws from the seed and the
    step, atomic checkpoint writes), so that a run killed at any point resumes from its last checkpoint exactly.
    """
    from lightning_vae.callbacks.exact_resume import ExactResume

    return [ValidateAtMaxSteps(), RunProgress(), SaveLastSteps(), ExactResume()]


def pin_logger_versions(trainer: Trainer) -> None:
    """Fix each logger's version (its folder) in the main process before ``ddp_spawn`` starts the workers.

    A logger picks its next free version folder when first asked; the spawned rank-zero worker would create
    ``version_0`` and the main process, asking afterwards, would name ``version_1``, a folder that does not exist.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    if type(launcher).__name__ != "_MultiProcessingLauncher":
        return
    for logger in trainer.loggers:
        _ = logger.version


def _epochs_text(steps: int, batches_done: float, per_epoch: float) -> str:
    text = f"{steps} step{'' if steps == 1 else 's'}"
    if not math.isfinite(per_epoch) or per_epoch <= 0:
        return text
    epochs = batches_done / per_epoch
    if abs(epochs - round(epochs)) < 1e-9:
        whole = round(epochs)
        return f"{text} ({whole} epoch{'' if whole == 1 else 's'})"
    return f"{text} ({epochs:.2f} epochs: {int(batches_done)} batches of {int(per_epoch)} per epoch)"


def _logger_lines(trainer: Trainer) -> list[str]:
    lines = []
    tensorboard = find_tensorboard_logger(trainer)  # the one the views write to: how to open it is worth a line
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if not log_dir or not Path(log_dir).is_dir():
            continue
        if logger is tensorboard:
            lines.append(f"  TensorBoard logs: {log_dir}")
            lines.append(f"  view them with: tensorboard --logdir {log_dir}  (then open http://localhost:6006)")
        elif isinstance(logger, CSVLogger):
            lines.append(f"  CSV logs: {log_dir}")
        else:
            lines.append(f"  {type(logger).__name__} logs: {log_dir}")
    return lines


def summarize(trainer: Trainer) -> str:
    """What a run reached: steps and epochs, ELBO = reconstruction - KL, bits/dim, the checkpoint, the log folders.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> print(summarize(Trainer(logger=False, enable_checkpointing=False)))
        <BLANKLINE>
        lightning-vae: trained 0 steps
    """
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k != PROGRESS_KEY and getattr(v, "numel", lambda: 1)() == 1
    }
    record = trainer.callback_metrics.get(PROGRESS_KEY)
    if record is not None and int(record[0]) >= trainer.global_step:
        steps, batches_done, per_epoch = int(record[0]), float(record[1]), float(record[2])
    else:
        batches = trainer.num_training_batches
        steps = trainer.global_step
        batches_done = float(trainer.fit_loop.epoch_loop.batch_progress.total.completed)
        per_epoch = float(batches) if isinstance(batches, (int, float)) else math.inf
    lines = [f"\nlightning-vae: trained {_epochs_text(steps, batches_done, per_epoch)}"]
    for stage in ("val", "train"):
        if f"{stage}/elbo" in metrics:
            lines.append(
                f"  {stage}: ELBO {metrics[f'{stage}/elbo']:.2f} nats = reconstruction "
                f"{-metrics[f'{stage}/recon']:.2f} - KL {metrics[f'{stage}/kl']:.2f} (nats per example)"
            )
            if f"{stage}/bits_per_dim" in metrics and math.isfinite(metrics[f"{stage}/bits_per_dim"]):
                lines.append(f"  {stage}: {metrics[f'{stage}/bits_per_dim']:.4f} bits/dim (from -ELBO)")
            break
    ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or getattr(
        trainer.checkpoint_callback, "last_model_path", ""
    )
    if ckpt:
        lines.append(f"  checkpoint: {ckpt}")
    lines.extend(_logger_lines(trainer))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ checkpoint -> data
def _read_checkpoint(ckpt_path: str | os.PathLike) -> Mapping[str, Any]:
    from lightning_vae.checkpoints import load_checkpoint

    return load_checkpoint(ckpt_path)  # weights only; a missing, corrupt or foreign file is a ValueError naming it


def _from_hydra_config(config_file: Path) -> dict[str, Any] | None:
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from lightning_vae.cli.args import yaml_problem
    from lightning_vae.targets import check_config

    problem = yaml_problem(config_file)
    if problem is not None:
        raise ValueError(problem)
    config = OmegaConf.load(config_file)
    data = config.get("data") if isinstance(config, DictConfig) else None
    if data is None or "_target_" not in data:
        return None
    check_config({"data": data}, str(config_file))  # nested _target_s too, before anything is resolved or built
    try:
        resolved = OmegaConf.to_container(data, resolve=True)
    except OmegaConfBaseException as err:
        raise ValueError(f"Cannot resolve the `data` section of {config_file}: {err}") from err
    assert isinstance(resolved, dict)
    init_args = {str(k): v for k, v in resolved.items() if not str(k).startswith("_")}
    return {"class_path": str(resolved["_target_"]), "init_args": init_args}


def checkpoint_data_config(ckpt_path: str | os.PathLike) -> dict[str, Any] | None:
    """The data module a checkpoint was trained on, as ``{"class_path": ..., "init_args": {...}}``, or ``None``.

    Looked up in the checkpoint (LightningCLI records the data module's class and arguments there), then in the
    ``.hydra/config.yaml`` of the Hydra run folder the checkpoint lies in.

    Raises:
        ValueError: If the file is missing, unreadable or not a Lightning checkpoint.
    """
    from lightning_vae.building import check_checkpoint_classes

    checkpoint = _read_checkpoint(ckpt_path)
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    found: dict[str, Any] | None = None
    source = str(ckpt_path)
    if "_class_path" in hparams:
        init_args = {k: v for k, v in hparams.items() if not k.startswith("_")}
        found = {"class_path": str(hparams["_class_path"]), "init_args": init_args}
    else:
        for parent in Path(ckpt_path).resolve().parents[:3]:
            hydra_config = parent / ".hydra" / "config.yaml"
            if hydra_config.is_file():
                found, source = _from_hydra_config(hydra_config), str(hydra_config)
                break
    if found is not None:
        # Every class it names must be a data module (or, nested, a network): refused before anything is called.
        check_checkpoint_classes({"data": found}, source=source)
    return found
