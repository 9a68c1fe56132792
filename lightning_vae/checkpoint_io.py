"""``AtomicCheckpointIO``: a checkpoint file is either the complete new one or the previous one, never a part."""

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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in the target folder, flush it to disk, then rename it.

    A process killed (even with SIGKILL) while writing leaves the previous checkpoint of that name intact
    and at most a ``.tmp`` file beside it, so ``--ckpt_path=last`` always finds a complete file. Lightning's
    own writer goes through a temporary file in the system's temp folder, which is a copy, not a rename,
    when that folder is on another file system. Local paths only; others fall back to Lightning's writer.

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
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
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


__all__ = ["AtomicCheckpointIO"]
