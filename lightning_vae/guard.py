"""The non-finite policy of a training run: a NaN or inf loss never reaches the optimizer unnoticed.

:class:`NonFiniteGuard` watches each training step's loss and reported terms. Two policies:

- ``"raise"`` (default): the run stops with a :class:`NonFiniteError` naming the global step, the batch
  index, the term that went non-finite (the data, the reconstruction term, the KL and which latent
  dimensions, or the network's parameters after a non-finite update) and what to try. On a CPU the
  loss is read at every step (a host read costs nothing there); on an accelerator the step's values
  are kept as device tensors and read on the steps whose values reach the loggers, at the end of each
  epoch and before any checkpoint is written, so the step itself never waits on the device.
- ``"skip"``: a step whose loss or gradients are non-finite changes neither the parameters nor the
  optimizer state (``training_step`` returns ``None``, or the gradients are dropped before the
  optimizer step); after ``max_skips`` such steps in a row the run stops with the error above. This
  reads one flag per step from the device, as mixed precision's gradient scaler does.

With either policy no checkpoint with non-finite parameters is ever written
(:meth:`check_parameters` runs in ``on_save_checkpoint``), so the last checkpoint on disk is the last
finite state of the run.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_vae.functional.kl import kl_per_dim
from lightning_vae.utilities import grads_finite

NonFinitePolicy = Literal["raise", "skip"]


class NonFiniteError(ValueError):
    """A loss, gradient or parameter became NaN or infinite during training; the message says where."""


class _Record(NamedTuple):
    step: int
    batch_idx: int
    epoch: int
    loss: Tensor
    recon: Tensor
    kl: Tensor
    kl_elementwise: Tensor | None


def nonfinite_parameters(module: nn.Module, limit: int = 5) -> list[str]:
    """Names of (at most ``limit``) parameters of ``module`` that hold a NaN or inf.

    Example::

        >>> net = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     net.bias[0] = float("nan")
        >>> nonfinite_parameters(net)
        ['bias']
    """
    names = []
    for name, param in module.named_parameters():
        if not bool(torch.isfinite(param).all()):
            names.append(name)
            if len(names) >= limit:
                break
    return names


class NonFiniteGuard:
    """Keeps a training run's non-finite policy (see the module docstring).

    Args:
        policy: ``"raise"`` or ``"skip"``.
        max_skips: With ``"skip"``, stop after this many skipped steps in a row.
        deferred: Read the flags only on :meth:`flush` (set for accelerators); ``False`` checks each step.
    """

    def __init__(self, policy: NonFinitePolicy = "raise", max_skips: int = 10, deferred: bool = False) -> None:
        self.policy = policy
        self.max_skips = max_skips
        self.deferred = deferred
        self.pending: list[_Record] = []
        #: Turns this process's "finite" flag into one all processes agree on (set under DDP with "skip").
        self.agree: Any = None
        self.skipped_in_row = 0
        self.skipped_total = 0

    def observe(
        self,
        module: nn.Module,
        x: Tensor,
        terms: Any,
        *,
        step: int,
        batch_idx: int,
        epoch: int,
    ) -> bool:
        """Take one training step's terms; return ``True`` when the step must be skipped.

        Raises:
            NonFiniteError: Under ``"raise"`` when the loss is non-finite (at once, or on a later flush when
                deferred), or under ``"skip"`` after ``max_skips`` non-finite steps in a row.
        """
        loss = terms.loss
        if self.policy == "raise" and not self.deferred:  # a host read (CPU): a Python float, no tensor op
            if math.isfinite(loss.detach().item()):
                return False
        record = _Record(step, batch_idx, epoch, loss, terms.recon, terms.kl, getattr(terms, "kl_elementwise", None))
        if self.policy == "skip":
            finite = torch.isfinite(record.loss)
            if bool(finite if self.agree is None else self.agree(finite)):
                self.skipped_in_row = 0
                return False
            self.skipped_in_row += 1
            self.skipped_total += 1
            message = self.describe(module, x, record)
            if self.skipped_in_row >= self.max_skips:
                raise NonFiniteError(
                    f"{message}\n{self.skipped_in_row} steps in a row were non-finite and skipped "
                    f"(max_skips={self.max_skips}); stopping."
                )
            rank_zero_warn(
                f"{message}\nStep skipped (no parameter or optimizer-state change); "
                f"{self.skipped_in_row} in a row, {self.skipped_total} in all."
            )
            return True
        if self.deferred:  # kept until the next flush: without the autograd graph
            elementwise = None if record.kl_elementwise is None else record.kl_elementwise.detach()
            detached = (record.loss.detach(), record.recon.detach(), record.kl.detach(), elementwise)
            self.pending.append(_Record(step, batch_idx, epoch, *detached))
            return False
        # "raise", read on the spot: only a non-finite loss gets here (a finite one returned above).
        raise NonFiniteError(self.describe(module, x, record) + self._advice())

    def pending_finite(self) -> Tensor | None:
        """Whether each kept loss is finite (1.0 or 0.0), on the device, or ``None`` with nothing kept.

        For a caller that copies it to the host with other values and hands the result to :meth:`flush`.
        """
        if not self.pending:
            return None
        return torch.isfinite(torch.stack([r.loss.float() for r in self.pending])).float()

    def flush(self, module: nn.Module, finite: Tensor | None = None) -> None:
        """Read the kept device values of the steps since the last flush (deferred mode).

        Args:
            module: The module, for the message.
            finite: :meth:`pending_finite` already copied to the host; read here when left out.

        Raises:
            NonFiniteError: Naming the first non-finite step, if any.
        """
        if not self.pending:
            return
        if finite is None:
            finite = self.pending_finite()
        assert finite is not None and len(finite) == len(self.pending)
        pending, self.pending = self.pending, []
        for record, ok in zip(pending, finite.tolist()):
            if not ok:
                raise NonFiniteError(
                    self.describe(module, None, record)
                    + f"\n(Detected at a later check: the steps after {record.step} ran on non-finite values.)"
                    + self._advice()
                )

    def check_gradients(self, module: nn.Module) -> bool:
        """Under ``"skip"``: drop the gradients when any is non-finite, so the optimizer step changes nothing.

        Returns ``True`` when the gradients were dropped.
        """
        if self.policy != "skip":
            return False
        if grads_finite([p.grad for p in module.parameters() if p.grad is not None]):
            return False
        for p in module.parameters():
            p.grad = None
        self.skipped_in_row += 1
        self.skipped_total += 1
        if self.skipped_in_row >= self.max_skips:
            raise NonFiniteError(
                f"Non-finite gradients: {self.skipped_in_row} steps in a row were skipped (max_skips={self.max_skips})"
                + self._advice()
            )
        rank_zero_warn(
            "Non-finite gradients (finite loss): the optimizer step was skipped; "
            f"{self.skipped_in_row} in a row, {self.skipped_total} in all."
        )
        return True

    @staticmethod
    def check_parameters(module: nn.Module, what: str = "write a checkpoint") -> None:
        """Raise when a parameter is non-finite: called before a checkpoint is written.

        Raises:
            NonFiniteError: Naming the parameters.
        """
        bad = nonfinite_parameters(module)
        if bad:
            raise NonFiniteError(
                f"Refusing to {what}: parameters {bad} hold NaN or inf. The last checkpoint on disk is the last "
                "finite state of the run."
            )

    def describe(self, module: nn.Module, x: Tensor | None, record: _Record) -> str:
        """What went non-finite at ``record``'s step, most likely cause first."""
        where = f"global step {record.step} (epoch {record.epoch}, batch {record.batch_idx})"
        causes = []
        if x is not None and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            causes.append(f"the data batch holds {bad} NaN/inf values (check the dataset and its transforms)")
        params = nonfinite_parameters(module)
        if params:
            causes.append(
                f"parameters {params} are already non-finite: an earlier update diverged (lower the learning "
                "rate, clip gradients with Trainer(gradient_clip_val=...))"
            )
        if not bool(torch.isfinite(record.recon)):
            causes.append("the reconstruction term -log p(x|z) is non-finite (decoder output or data)")
        if not bool(torch.isfinite(record.kl)):
            dims = ""
            if record.kl_elementwise is not None:
                per_dim = kl_per_dim(record.kl_elementwise.detach())
                bad_dims = (~torch.isfinite(per_dim)).nonzero().flatten().tolist()
                dims = f" in latent dimensions {bad_dims[:10]}" if bad_dims else ""
            causes.append(f"the KL term is non-finite{dims} (encoder output)")
        if not causes:
            causes.append("the loss is non-finite while its terms are finite (β, free bits or capacity settings)")
        return f"Non-finite loss ({float(record.loss.detach())}) at {where}: " + "; ".join(causes) + "."

    def _advice(self) -> str:
        return (
            "\nThe run stopped before writing non-finite weights: resume from the last checkpoint with a lower "
            "learning rate or gradient clipping, or pass VAE(on_nonfinite='skip') to skip such steps."
        )


class DataCheck:
    """Checks batches against the likelihood (finite, within its range) on the first batches, then every Nth.

    The range check is one fused min/max reduction and one host read (a sync on accelerators): it runs on the
    first ``first`` batches, where bad data shows, then every ``every``-th. NaN/inf data in any other batch makes
    that batch's loss non-finite, which the non-finite policy catches at every step.

    Args:
        first: Batches checked at the start.
        every: Then every this many batches.
    """

    def __init__(self, first: int = 10, every: int = 50) -> None:
        self.first, self.every = first, every
        self.seen = 0

    def skip(self) -> bool:
        """Count this batch and return ``True`` if it is not due for a check; ``False`` (nothing counted) if it is.

        The training step's common case asks this first and, for a due batch, takes the path that checks.
        """
        if self.seen < self.first or self.seen % self.every == 0:
            return False
        self.seen += 1
        return True

    def __call__(self, likelihood: Any, x: Tensor, policy: NonFinitePolicy, where: Any = None) -> bool:
        """Check ``x`` if this batch is due and say whether it was; ``where()`` describes the step (on failure only).

        Raises:
            ValueError: For finite data outside the likelihood's range.
            NonFiniteError: For NaN/inf data under ``policy="raise"`` (under ``"skip"`` the step's non-finite loss
                is handled by the guard).
        """
        if self.skip():
            return False
        self.seen += 1
        try:
            likelihood.check_target(x)
        except ValueError as err:
            context = f" ({where()})" if where is not None else ""
            if bool(torch.isfinite(x).all()):
                raise ValueError(f"{err}{context}") from None
            if policy == "raise":
                raise NonFiniteError(f"{err}{context}") from None
        return True


__all__ = ["DataCheck", "NonFiniteError", "NonFiniteGuard", "NonFinitePolicy", "nonfinite_parameters"]
