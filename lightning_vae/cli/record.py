"""What ``lightning-vae fit`` records in its checkpoints about the run, so that evaluating one needs no config.

``lightning-vae test --ckpt_path CKPT`` (and ``validate``, ``predict``) with no ``--config`` rebuilds the run the
checkpoint came from: the data module (recorded by LightningCLI itself,
:func:`~lightning_vae.cli.runs.checkpoint_data_config`), and from the record written here the trainer's callbacks
(so ``PosteriorCollapseMonitor`` reports ``collapse/*`` test metrics and Lightning finds the callbacks whose state
the checkpoint holds), the run's folder (``trainer.default_root_dir``: logs and checkpoints land beside the training
run's, not in ``./lightning_logs``), its loggers and its seed. Arguments given on the command line come after
the recorded ones and win.

Every class the record names is checked to be a Lightning ``Callback`` or ``Logger`` before anything is built
(a checkpoint is data, never code).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

#: Key of the record in a checkpoint.
RECORD_KEY = "lightning_vae_run"


def _plain(value: Any) -> Any:
    """jsonargparse Namespaces, tuples and paths as plain dicts, lists and strings (what a weights-only load reads)."""
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        value = as_dict()
    return json.loads(json.dumps(value, default=str))


def run_record(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The part of a ``fit`` config that evaluating its checkpoints needs: seed, run folder, callbacks, loggers.

    ``config`` is LightningCLI's parsed ``fit`` config (a jsonargparse Namespace or a mapping).

    Example::

        >>> record = run_record({"seed_everything": 0, "trainer": {"default_root_dir": "logs/shapes", "callbacks": [
        ...     {"class_path": "lightning_vae.callbacks.PosteriorCollapseMonitor"}], "logger": None}})
        >>> record["seed_everything"], Path(record["default_root_dir"]).is_absolute(), len(record["callbacks"])
        (0, True, 1)
    """
    config = _plain(config)
    trainer = config.get("trainer") or {}
    root = trainer.get("default_root_dir")
    return {
        "seed_everything": config.get("seed_everything"),
        "default_root_dir": os.path.abspath(root if root else os.getcwd()),
        "callbacks": list(trainer.get("callbacks") or []),
        "logger": trainer.get("logger"),
    }


class RunRecord(Callback):
    """Write :func:`run_record` into every checkpoint of the run (``lightning-vae fit`` adds it).

    Args:
        record: What :func:`run_record` returned for the run's config.
    """

    def __init__(self, record: Mapping[str, Any]) -> None:
        super().__init__()
        self.record = dict(record)

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECORD_KEY] = self.record


def _check_classes(entries: Any, slot: str, source: str) -> None:
    from lightning_vae.building import check_checkpoint_classes, resolve_class

    for entry in entries if isinstance(entries, list) else [entries]:
        if not isinstance(entry, Mapping) or "class_path" not in entry:
            continue
        try:
            resolve_class(entry["class_path"], slot)
        except ValueError as err:
            raise ValueError(f"{source}: the recorded {slot}s: {err}") from None
        check_checkpoint_classes(dict(entry.get("init_args") or {}), source=source)  # nested classes: networks


def recorded_run(ckpt_path: str | os.PathLike) -> dict[str, Any] | None:
    """The run record of a checkpoint written by ``lightning-vae fit``, its classes checked; ``None`` without one.

    Raises:
        ValueError: If the file is not a readable checkpoint, or the record names a class that is not a Lightning
            ``Callback`` (callbacks) or ``Logger`` (loggers).
    """
    from lightning_vae.checkpoints import load_checkpoint

    record = load_checkpoint(ckpt_path).get(RECORD_KEY)
    if not isinstance(record, Mapping):
        return None
    _check_classes(record.get("callbacks") or [], "callback", str(ckpt_path))
    _check_classes(record.get("logger"), "logger", str(ckpt_path))
    return dict(record)


def recorded_run_args(ckpt_path: str | os.PathLike, given: Sequence[str]) -> list[str]:
    """LightningCLI arguments that restore a checkpoint's run: seed, folder, callbacks, loggers.

    Left out: what ``given`` (the command line) sets itself, and a run folder that no longer exists.

    Raises:
        ValueError: As :func:`recorded_run`.
    """
    record = recorded_run(ckpt_path)
    if record is None:
        return []

    def set_by_user(*flags: str) -> bool:
        return any(arg == flag or arg.startswith(f"{flag}=") for arg in given for flag in flags)

    args: list[str] = []
    if record.get("seed_everything") is not None and not set_by_user("--seed_everything"):
        args.append(f"--seed_everything={record['seed_everything']}")
    root = record.get("default_root_dir")
    if isinstance(root, str) and Path(root).is_dir() and not set_by_user("--trainer.default_root_dir"):
        args.append(f"--trainer.default_root_dir={root}")
    if record.get("callbacks") and not set_by_user("--trainer.callbacks"):
        args.append(f"--trainer.callbacks={json.dumps(record['callbacks'])}")
    logger = record.get("logger")
    if isinstance(logger, (Mapping, list)) and logger and not set_by_user("--trainer.logger"):
        args.append(f"--trainer.logger={json.dumps(logger)}")
    return args


__all__ = ["RECORD_KEY", "RunRecord", "recorded_run", "recorded_run_args", "run_record"]
