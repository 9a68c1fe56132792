"""Checkpoint files: reading them safely, writing them atomically, migrating older layouts.

:func:`load_checkpoint` reads a checkpoint with ``torch.load(weights_only=True)`` (no unpickling of arbitrary
objects) and turns a missing, empty, truncated or foreign file into a ``ValueError`` that names the file and what
is wrong with it. :class:`AtomicCheckpointIO` writes a checkpoint so the file is either the complete new one or the
previous one, never a part. :func:`migrate_state_dict` renames the weights of older layouts.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
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
    :func:`load_checkpoint`: the zip members' CRCs are checked and ``torch.load`` is
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
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")


#: Top-level children of the training module whose parameters now live under its ``model``.
_MODEL_CHILDREN = ("encoder.", "decoder.", "likelihood.", "prior.")


def migrate_state_dict(checkpoint: dict[str, Any]) -> None:
    """Rename the weights of a checkpoint written when the networks were children of the training module.

    ``encoder.*``, ``decoder.*``, ``likelihood.*`` and ``prior.*`` become ``model.encoder.*`` and so on (in
    place); a checkpoint already in the new layout is left as it is.
    """
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or any(key.startswith("model.") for key in state):
        return
    if any(key.startswith(_MODEL_CHILDREN) for key in state):
        checkpoint["state_dict"] = {
            (f"model.{key}" if key.startswith(_MODEL_CHILDREN) else key): value for key, value in state.items()
        }


def check_crc(path: str | os.PathLike) -> None:
    """Check the CRC-32 of every member of a zip-format checkpoint (``torch.save``'s format); torch does not.

    A flipped bit in a tensor's bytes otherwise loads silently as another number. Legacy (non-zip) files have
    no checksums and pass.

    Raises:
        ValueError: Naming the file and the first damaged member.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return  # not a zip file: torch.load's own errors name what is wrong
    except (OSError, EOFError, RuntimeError, ValueError) as err:  # zlib errors, unreadable files
        raise ValueError(f"{str(path)!r} is corrupt: its zip structure cannot be read ({err})") from err
    if bad is not None:
        raise ValueError(
            f"{str(path)!r} is corrupt: member {bad!r} fails its CRC-32 check (a damaged copy or a flipped bit on "
            "disk); use another checkpoint"
        )


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a Lightning checkpoint safely: CRC-checked, ``weights_only=True``, and errors that name the file.

    Raises:
        ValueError: If the file is missing, empty, truncated or corrupt (a member failing its CRC-32 check
            included), or is not a checkpoint (no ``state_dict``); the message names the file.

    Example::

        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".ckpt") as f:
        ...     load_checkpoint(f.name)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ... is empty (0 bytes), not a checkpoint
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"Expected a checkpoint file, got {str(path)!r}: no such file")
    size = file.stat().st_size
    if size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes), not a checkpoint")
    with open(file, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip format, or a legacy pickle
        raise ValueError(f"{str(path)!r} ({size} bytes) is not a PyTorch checkpoint (it starts with {head!r})")
    check_crc(file)
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError) as err:
        raise ValueError(
            f"{str(path)!r} ({size} bytes) is truncated or corrupt, or not a PyTorch checkpoint: {err}"
        ) from err
    except Exception as err:  # pickle.UnpicklingError and friends: not something weights_only=True accepts
        raise ValueError(
            f"{str(path)!r} holds objects that a weights-only load refuses (it is not a plain checkpoint, or it "
            f"was written with arbitrary pickled objects): {err}"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{str(path)!r} is not a Lightning checkpoint: no `state_dict` (found {keys})")
    return checkpoint


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
    if type(getattr(strategy, "checkpoint_io", None)) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


__all__ = [
    "TMP_PREFIX",
    "TMP_SUFFIX",
    "AtomicCheckpointIO",
    "check_crc",
    "checkpoint_step",
    "load_checkpoint",
    "migrate_state_dict",
    "remove_unfinished_writes",
    "use_safe_checkpoint_io",
]
