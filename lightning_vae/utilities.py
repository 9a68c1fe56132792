"""Small helpers for callbacks and modules: whether this step logs and at which step, the data of a batch, finite
gradients, values to log copied to the host at once, a module's recorded hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce
from typing import Any, Literal, overload

import torch
from torch import Tensor

from lightning_vae.adapters import batches_that_stepped, foreach_norms, initial_hparams, should_update_logs
from lightning_vae.data.common import read_batch


def logs_this_step(trainer: Any) -> bool:
    """Whether the loggers receive step values after the current (or next) training step.

    Lightning writes step values to the loggers only every ``log_every_n_steps``; a module or callback
    can skip its ``self.log`` calls on the other steps. Valid inside ``training_step`` and
    ``on_train_batch_start``. Without a trainer that can tell, the answer is ``True`` (log every step).

    Example::

        >>> logs_this_step(None)
        True
    """
    return should_update_logs(trainer)


def logging_step(trainer: Any) -> int:
    """The step Lightning writes logged values at right now: where a view drawn now lines up with the scalars.

    Lightning logs at its count of optimizer steps taken *before* the current batch finished, so the validation
    scalars of a check after step 100 are written at step 99, while ``trainer.global_step`` already reads 100.
    Images, histograms and heat maps written at this step sit on the same x as the ``val/...`` scalars in
    TensorBoard (and any other logger). Outside a fit loop it is ``trainer.global_step``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> logging_step(Trainer(logger=False, enable_checkpointing=False))
        0
    """
    return batches_that_stepped(trainer)


def record_hparam(pl_module: Any, key: str, value: Any) -> bool:
    """Make a module's recorded hyperparameter ``key`` say ``value``: in what Lightning logs and what it saves.

    Lightning logs ``hparams_initial`` (``hparams.yaml``, TensorBoard's HPARAMS tab, MLflow's parameters) and saves
    ``hparams`` in checkpoints; a callback that fixes a value for the whole run (``FreeBits(0.1)``) records it in both,
    before Lightning logs them. Only a key the module already records is changed. Returns whether it was.

    Example::

        >>> from lightning.pytorch import LightningModule
        >>> class Module(LightningModule):
        ...     def __init__(self, free_bits: float = 0.0) -> None:
        ...         super().__init__()
        ...         self.save_hyperparameters()
        >>> module = Module()
        >>> record_hparam(module, "free_bits", 0.1), module.hparams_initial["free_bits"], module.hparams["free_bits"]
        (True, 0.1, 0.1)
    """
    hparams = getattr(pl_module, "hparams", None)
    if hparams is None or key not in hparams:
        return False
    hparams[key] = value
    initial = initial_hparams(pl_module)
    if initial is not None and key in initial:
        initial[key] = value
    return True


@overload
def batch_data(pl_module: Any, batch: Any, optional: Literal[False] = False) -> Tensor: ...
@overload
def batch_data(pl_module: Any, batch: Any, optional: Literal[True]) -> Tensor | None: ...
def batch_data(pl_module: Any, batch: Any, optional: bool = False) -> Tensor | None:
    """The data tensor of a batch, for callbacks that work on any module.

    ``pl_module.read_batch(batch).x`` when the module has ``read_batch`` (as ``VAE``, where a user replaces it to
    read another batch layout), else :func:`lightning_vae.data.common.read_batch` (a tensor, an ``(x, y, ...)``
    sequence or a dict). With ``optional``, ``None`` for a batch that holds no data tensor (a callback then skips it).

    Raises:
        TypeError: When the batch is none of these; the message says to add ``read_batch``.
        ValueError: When a dict batch holds no tensor under the known keys.

    Example::

        >>> import torch
        >>> batch_data(object(), (torch.zeros(2, 3), torch.ones(2))).shape, batch_data(object(), "text", optional=True)
        (torch.Size([2, 3]), None)
    """
    if optional:
        try:
            x = batch_data(pl_module, batch)
        except (TypeError, ValueError):
            return None
        return x if isinstance(x, Tensor) else None
    read = getattr(pl_module, "read_batch", None)
    if callable(read):
        return read(batch).x  # type: ignore[no-any-return]
    try:
        return read_batch(batch).x
    except TypeError as error:
        raise TypeError(
            f"{error}; or give the module a `read_batch(batch)` method that returns "
            "lightning_vae.data.Batch(x, context)"
        ) from None


def is_conditional(pl_module: Any) -> bool:
    """Whether the module's model (or the module itself) declares ``conditional = True``."""
    return bool(getattr(getattr(pl_module, "model", pl_module), "conditional", False))


def batch_context(pl_module: Any, batch: Any) -> Tensor | None:
    """The context of a batch for a conditional model (read as :func:`batch_data` reads the data), else ``None``.

    Example::

        >>> import torch
        >>> batch_context(object(), (torch.zeros(2, 3), torch.ones(2))) is None  # not a conditional model
        True
    """
    if not is_conditional(pl_module):
        return None
    read = getattr(pl_module, "read_batch", None)
    return (read(batch) if callable(read) else read_batch(batch)).context  # type: ignore[no-any-return]


def grads_finite(grads: list[Tensor]) -> bool:
    """Whether every gradient tensor is finite: one fused norm per tensor and one host read for the lot.

    Example::

        >>> import torch
        >>> grads_finite([torch.ones(3), torch.zeros(2)]), grads_finite([torch.tensor([float("nan")])])
        (True, False)
    """
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(foreach_norms(grads))).all())


def to_host(values: Mapping[str, Tensor], extra: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor | None]:
    """Copy one-element tensors (and the values of ``extra``) to the host in one device-to-host copy.

    A logger turns each tensor it gets into a number, and on an accelerator each such read waits for the device:
    stacked, the values of a logging step cost one wait. They come back in their common type (float64 if any is).

    Returns:
        The values by name as host tensors of one element, and ``extra`` on the host (``None`` without it).

    Example::

        >>> host, flags = to_host({"a": torch.tensor(1.0), "b": torch.tensor([2.0])}, torch.tensor([1.0, 0.0]))
        >>> host, flags
        ({'a': tensor(1.), 'b': tensor(2.)}, tensor([1., 0.]))
    """
    tensors = [v.detach().reshape(1) for v in values.values()]
    if extra is not None:
        tensors.append(extra.detach().reshape(-1))
    if not tensors:
        return {}, None
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors))
    host = torch.cat([t.to(dtype) for t in tensors]).cpu()
    n = len(values)
    return dict(zip(values, host[:n].unbind())), None if extra is None else host[n:]
