"""``AtomicCheckpointIO``: a checkpoint file is either the complete new one or the previous one, never a part; and
every checkpoint the trainer reads (``ckpt_path`` of fit, validate, test, predict) is read as data only."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: How a temporary file of :class:`AtomicCheckpointIO` is named beside its target: ``.<name>.<random>.tmp``.
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in the target folder, flush it to disk, then rename it; read
    checkpoints as data only.

    A process killed (even with SIGKILL) while writing leaves the previous checkpoint of that name intact
    and at most a ``.tmp`` file beside it (which :class:`~lightning_vae.callbacks.ExactResume` removes when the
    run resumes), so ``--ckpt_path=last`` always finds a complete file. Lightning's own writer goes through a
    temporary file in the system's temp folder, which is a copy, not a rename, when that folder is on another
    file system. Local paths only; others fall back to Lightning's writer.

    Reading (the ``ckpt_path`` of ``fit``, ``validate``, ``test``, ``predict``) goes through
    :func:`lightning_vae.building.load_checkpoint`: the zip members' CRCs are checked and ``torch.load`` is
    called with ``weights_only=True`` explicitly, whatever the caller or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    asks, so a checkpoint never unpickles code; a damaged file is a ``ValueError`` naming it.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(plugins=[AtomicCheckpointIO()], logger=False)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{TMP_PREFIX}{target.name}.", suffix=TMP_SUFFIX)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # the mode a plain open() would give, not mkstemp's 0600
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read a checkpoint with CRC checks and ``weights_only=True`` (whatever ``weights_only`` says).

        Raises:
            FileNotFoundError: If there is no such file (as Lightning's reader).
            ValueError: For a damaged, truncated or foreign file, or one holding pickled objects; naming it.
        """
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        from lightning_vae.building import load_checkpoint

        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")


def remove_unfinished_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes of :class:`AtomicCheckpointIO` killed midway left in ``folder``.

    Returns:
        The files removed.
    """
    removed = []
    for path in Path(folder).glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
        if path.is_file() and ".ckpt." in path.name:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The ``global_step`` a checkpoint file records (its tensors are not read), or ``None`` if it is unreadable."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    except Exception:  # noqa: BLE001 - a file that is not a checkpoint is not one of this run's
        return None
    return int(step) if isinstance(step, int) else None


def use_safe_checkpoint_io(trainer: Any) -> None:
    """Give ``trainer`` an :class:`AtomicCheckpointIO` where it has Lightning's default reader and writer.

    A checkpoint IO of the user's own (another class) is left as it is.
    """
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


__all__ = [
    "TMP_PREFIX",
    "TMP_SUFFIX",
    "AtomicCheckpointIO",
    "checkpoint_step",
    "remove_unfinished_writes",
    "use_safe_checkpoint_io",
]
