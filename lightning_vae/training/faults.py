"""The non-finite policy of a training run: a NaN or inf loss never reaches the optimizer unnoticed, and a loss
that explodes while finite stops the run.

:class:`NonFiniteGuard` watches each training step's loss and reported terms. Two policies:

- ``"raise"`` (default): the run stops with a :class:`NonFiniteError` naming the global step, the batch
  index, the term that went non-finite (the data, the reconstruction term, the KL and which latent
  dimensions, or the network's parameters after a non-finite update) and what to try. On a CPU the
  loss is read at every step (a host read costs nothing there); on an accelerator the step's values
  are kept as device tensors and read on the steps whose values reach the loggers, at the end of each
  epoch and before any checkpoint is written, so the step itself never waits on the device.
- ``"skip"``: a step whose loss or gradients are non-finite changes neither the parameters nor the
  optimizer state: its gradients are dropped before the optimizer step, on every process alike under DDP
  (the decision is all-reduced; the training step still returns its loss, as Lightning requires under
  distributed training); after ``max_skips`` such steps in a row the run stops with the error above. This
  reads one value per step from the device (the loss's and the gradients' finiteness together, with the
  loss), as mixed precision's gradient scaler does.

**Divergence** (both policies): the absolute loss of the run's first training step (before any update; at least
1 nat) is its scale; a finite loss whose absolute value exceeds ``divergence_ratio`` times that scale (default
10⁴) stops the run with a :class:`DivergenceError` naming the step and both values. A loss that grows that much
while finite means the updates diverged (a learning rate far too high): the weights are then garbage, and a run
that went on would end with "success". The check reads the values the policy reads anyway (no extra host read);
the scale is saved in checkpoints, so a resumed run applies the same limit.

With either policy no checkpoint with non-finite parameters or optimizer state (Adam's moments that overflowed
while the parameters stayed finite) is ever written (:meth:`check_parameters` and :meth:`check_optimizer_states`
run in ``on_save_checkpoint``), so the last checkpoint on disk is the last finite state of the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_vae.functional.kl import kl_per_dim

NonFinitePolicy = Literal["raise", "skip"]
#: Steps whose losses set a run's scale for the divergence check (the first: before any update).
CALIBRATION_STEPS = 1


class NonFiniteError(ValueError):
    """A loss, gradient or parameter became NaN or infinite during training; the message says where."""


class DivergenceError(NonFiniteError):
    """The training loss stayed finite but exploded (see :class:`NonFiniteGuard`'s divergence rule)."""


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


def nonfinite_optimizer_states(states: Any, where: str = "optimizer_states", limit: int = 5) -> list[str]:
    """Where (at most ``limit`` places) the tensors of optimizer state dicts hold a NaN or inf.

    ``states`` is anything holding optimizer state dicts (a list of them, as a checkpoint's
    ``optimizer_states``, or a callback's state with one inside): every mapping with ``state`` and
    ``param_groups`` is searched.

    Example::

        >>> opt = torch.optim.Adam([nn.Parameter(torch.ones(2))])
        >>> opt.state[opt.param_groups[0]["params"][0]] = {"exp_avg_sq": torch.tensor([1.0, float("inf")])}
        >>> nonfinite_optimizer_states([opt.state_dict()])
        ['optimizer_states[0].state[0].exp_avg_sq']
    """
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if len(found) >= limit:
            return
        if isinstance(node, Mapping) and "state" in node and "param_groups" in node:
            for index, values in (node.get("state") or {}).items():
                for name, value in (values or {}).items():
                    if (
                        isinstance(value, Tensor)
                        and value.is_floating_point()
                        and not bool(torch.isfinite(value).all())
                    ):
                        found.append(f"{path}.state[{index}].{name}")
            return
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(states, where)
    return found[:limit]


class NonFiniteGuard:
    """Keeps a training run's non-finite policy and its divergence rule (see the module docstring).

    Args:
        policy: ``"raise"`` or ``"skip"``.
        max_skips: With ``"skip"``, stop after this many skipped steps in a row.
        deferred: Read the flags only on :meth:`flush` (set for accelerators); ``False`` checks each step.
        divergence_ratio: Stop when a finite loss exceeds this many times the run's scale; ``None`` disables it.
    """

    def __init__(
        self,
        policy: NonFinitePolicy = "raise",
        max_skips: int = 10,
        deferred: bool = False,
        divergence_ratio: float | None = 1e4,
    ) -> None:
        self.policy = policy
        self.max_skips = max_skips
        self.deferred = deferred
        self.divergence_ratio = divergence_ratio
        self.pending: list[_Record] = []
        #: Under ``"skip"``: the records (and data) of the steps whose gradients the next optimizer step applies.
        self.unchecked: list[tuple[_Record, Tensor]] = []
        #: Turns this process's ``[any non-finite, largest |loss|]`` into the values of all processes (set under DDP).
        self.agree: Callable[[Tensor], Tensor] | None = None
        self.skipped_in_row = 0
        self.skipped_total = 0
        #: The largest absolute loss of the calibration steps (the run's scale), and how many steps it has seen.
        self.scale = 0.0
        self.calibrated = 0
        #: Losses with an absolute value below this need no further look (0 while calibrating: every loss does).
        self.limit = 0.0 if divergence_ratio is not None else math.inf

    # ------------------------------------------------------------------ divergence
    def _check_divergence(self, value: float, record: _Record) -> None:
        """Take a finite loss value: calibrate the scale, or raise if the loss diverged."""
        if self.divergence_ratio is None:
            return
        if self.calibrated < CALIBRATION_STEPS:
            self.scale = max(self.scale, abs(value))
            self.calibrated += 1
            if self.calibrated == CALIBRATION_STEPS:
                self.limit = self.divergence_ratio * max(self.scale, 1.0)
            return
        if abs(value) >= self.limit:
            raise DivergenceError(
                f"Divergence: the training loss reached {value:.4g} at global step {record.step} (epoch "
                f"{record.epoch}, batch {record.batch_idx}), more than {self.divergence_ratio:g} times the run's "
                f"scale {max(self.scale, 1.0):.4g} (the absolute loss of its first step) while still finite. The run "
                "stopped before writing diverged weights: resume from the last checkpoint with a lower learning "
                "rate or gradient clipping (Trainer(gradient_clip_val=...)); "
                "VAE(divergence_ratio=None) turns this check off."
            )

    def state_dict(self) -> dict[str, Any]:
        """The divergence scale (what a resumed run needs to apply the same rule)."""
        return {"scale": self.scale, "calibrated": self.calibrated}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scale = float(state.get("scale", 0.0))
        self.calibrated = int(state.get("calibrated", 0))
        if self.divergence_ratio is None:
            self.limit = math.inf
        elif self.calibrated >= CALIBRATION_STEPS:
            self.limit = self.divergence_ratio * max(self.scale, 1.0)
        else:
            self.limit = 0.0

    # ------------------------------------------------------------------ the step's loss
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
        """Take one training step's terms. Returns ``False`` (the step goes on: under ``"skip"`` the decision is
        made on the gradients, by :meth:`check_step`).

        Raises:
            NonFiniteError: Under ``"raise"`` when the loss is non-finite (at once, or on a later flush when
                deferred).
            DivergenceError: When a finite loss exceeds the divergence limit (read where the loss is read).
        """
        loss = terms.loss
        if self.policy == "raise" and not self.deferred:  # a host read (CPU): a Python float, no tensor op
            value = loss.detach().item()
            if abs(value) < self.limit:
                return False
        record = _Record(step, batch_idx, epoch, loss, terms.recon, terms.kl, getattr(terms, "kl_elementwise", None))
        if self.policy == "skip" or self.deferred:  # kept until the next check: without the autograd graph
            elementwise = None if record.kl_elementwise is None else record.kl_elementwise.detach()
            detached = _Record(
                step, batch_idx, epoch, loss.detach(), record.recon.detach(), record.kl.detach(), elementwise
            )
            if self.policy == "skip":
                self.unchecked.append((detached, x))
            else:
                self.pending.append(detached)
            return False
        if math.isfinite(value):  # "raise", read on the spot: calibrating, or beyond the limit
            self._check_divergence(value, record)
            return False
        raise NonFiniteError(self.describe(module, x, record) + self._advice())

    def observe_step(self, module: nn.Module, x: Tensor, terms: Any, trainer: Any, batch_idx: int) -> bool:
        """:meth:`observe` for a training step under ``trainer`` (or none): its step and epoch are read only when
        the loss needs more than the one host read of ``policy="raise"``."""
        if self.policy == "raise" and not self.deferred and abs(terms.loss.detach().item()) < self.limit:
            return False
        step, epoch = (trainer.global_step, trainer.current_epoch) if trainer is not None else (0, 0)
        return self.observe(module, x, terms, step=step, batch_idx=batch_idx, epoch=epoch)

    def pending_losses(self) -> Tensor | None:
        """The kept losses of the steps since the last flush, stacked on the device, or ``None`` with nothing kept.

        For a caller that copies them to the host with other values and hands the result to :meth:`flush`.
        """
        if not self.pending:
            return None
        return torch.stack([r.loss.detach().float() for r in self.pending])

    def flush(self, module: nn.Module, losses: Tensor | None = None) -> None:
        """Read the kept device values of the steps since the last flush (deferred mode).

        Args:
            module: The module, for the message.
            losses: :meth:`pending_losses` already copied to the host; read here when left out.

        Raises:
            NonFiniteError: Naming the first non-finite step, if any.
            DivergenceError: Naming the first step whose loss exceeded the divergence limit.
        """
        if not self.pending:
            return
        if losses is None:
            losses = self.pending_losses()
        assert losses is not None and len(losses) == len(self.pending)
        pending, self.pending = self.pending, []
        values = losses.tolist()
        for record, value in zip(pending, values):
            if not math.isfinite(value):
                raise NonFiniteError(
                    self.describe(module, None, record)
                    + f"\n(Detected at a later check: the steps after {record.step} ran on non-finite values.)"
                    + self._advice()
                )
            if abs(value) >= self.limit:
                self._check_divergence(value, record)

    def check_step(self, module: nn.Module, scaled: bool = False) -> bool:
        """Under ``"skip"``, before the optimizer step: drop the gradients when the loss or a gradient is non-finite.

        One host read per step: whether the step's loss (of every accumulated batch) and gradients are finite,
        with the loss's magnitude for the divergence rule; under DDP both are agreed by all processes first (the
        gradients are already averaged), so every process drops or keeps alike. With ``scaled`` (16-bit mixed
        precision) the gradient scaler owns non-finite gradients: only the loss is checked.

        Returns ``True`` when the gradients were dropped (the optimizer step then changes nothing).

        Raises:
            NonFiniteError: After ``max_skips`` dropped steps in a row.
            DivergenceError: When a finite loss exceeds the divergence limit.
        """
        if self.policy != "skip":
            return False
        kept, self.unchecked = self.unchecked, []
        records = [record for record, _ in kept]
        params = [p for p in module.parameters() if p.grad is not None]
        losses = torch.stack([r.loss.float() for r in records]) if records else torch.zeros(1)
        finite = torch.isfinite(losses).all()
        if params and not scaled:
            norms = torch.stack(torch._foreach_norm([p.grad for p in params]))  # type: ignore[misc]
            finite = finite & torch.isfinite(norms).all()
        flags = torch.stack([(~finite).float(), losses.abs().nan_to_num(0.0, posinf=0.0).max().float()])
        if self.agree is not None:
            flags = self.agree(flags)
        bad, magnitude = flags.tolist()
        if not bad:
            self.skipped_in_row = 0
            if records:
                self._check_divergence(magnitude, records[-1])
            return False
        for p in module.parameters():
            p.grad = None
        self.skipped_in_row += 1
        self.skipped_total += 1
        bad_step = next(((r, x) for r, x in kept if not bool(torch.isfinite(r.loss))), None)
        if bad_step is not None:
            message = self.describe(module, bad_step[1], bad_step[0])
        else:
            where = f" at global step {records[-1].step} (batch {records[-1].batch_idx})" if records else ""
            message = f"Non-finite gradients{where}, or a non-finite loss on another process"
        if self.skipped_in_row >= self.max_skips:
            raise NonFiniteError(
                f"{message}\n{self.skipped_in_row} steps in a row were non-finite and skipped "
                f"(max_skips={self.max_skips}); stopping." + self._advice()
            )
        rank_zero_warn(
            f"{message}\nStep skipped (no parameter or optimizer-state change); "
            f"{self.skipped_in_row} in a row, {self.skipped_total} in all."
        )
        return True

    def check_gradients(self, module: nn.Module) -> bool:
        """The same as :meth:`check_step` (kept for code that called it by this name)."""
        return self.check_step(module)

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

    @staticmethod
    def check_optimizer_states(checkpoint: Mapping[str, Any]) -> None:
        """Raise when an optimizer state in ``checkpoint`` (the trainer's, or one a callback keeps) is non-finite.

        Adam's second moment overflows to inf when a gradient's square exceeds the float range, while the
        parameters stay finite (the update divides by it): a run resumed from such a state no longer learns.

        Raises:
            NonFiniteError: Naming the state entries.
        """
        bad = nonfinite_optimizer_states(checkpoint.get("optimizer_states") or [])
        bad += nonfinite_optimizer_states(checkpoint.get("callbacks") or {}, "callbacks")
        if bad:
            raise NonFiniteError(
                f"Refusing to write a checkpoint: optimizer state {bad[:5]} holds NaN or inf (the updates diverged; "
                "the parameters may still look finite). The last checkpoint on disk is the last finite state of the "
                "run: resume from it with a lower learning rate or gradient clipping."
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
    """Checks training and evaluation batches against the likelihood: finite, and within its range.

    On the CPU, where reading a value back costs nothing, every batch is checked: the full check
    (:meth:`Likelihood.check_target <lightning_vae.distributions.likelihoods.Likelihood.check_target>`) on the
    every batch (:meth:`skip` offers the quicker test, one fused min/max of the batch against the range the last full
    check found). On an accelerator, where each read waits for the device,
    the first ``first`` batches are checked and then every ``every``-th (default 25, so never 40 batches in a row
    go unchecked). NaN/inf data in a batch between checks makes its loss non-finite, which the non-finite policy
    catches at every step.

    Args:
        first: Batches checked at the start (accelerators).
        every: Then every this many batches (accelerators).
    """

    def __init__(self, first: int = 10, every: int = 25) -> None:
        self.first, self.every = first, every
        self.seen = 0
        #: Check every CPU batch (tests set it ``False`` to give a CPU run the accelerator schedule).
        self.every_cpu_batch = True
        #: The target range of the likelihood the last full check passed: ``(low, high)``, ``None`` (it has none), or
        #: ``False`` (no full check yet), for :meth:`skip`'s quick test (the range alone: a likelihood's other
        #: checks, such as the categorical one's 8-bit grid, run with the full check).
        self._range: tuple[float, float] | None | bool = False

    def _due(self, x: Tensor | None) -> bool:
        if self.every_cpu_batch and x is not None and x.is_cpu:
            return True
        return self.seen < self.first or self.seen % self.every == 0

    def skip(self, x: Tensor | None = None) -> bool:
        """Count this batch and return ``True`` if it needs no full check; ``False`` (nothing counted) if it does.

        A CPU batch needs none when one fused min/max (a host read, free there) puts it inside the range of the
        likelihood the last full check saw; a NaN fails the test. Any other batch needs none when it is not due
        on the accelerator schedule. :meth:`__call__` asks this first.
        """
        if x is not None and self.every_cpu_batch and x.is_cpu:
            bounds = self._range
            if bounds is False:
                return False
            if bounds is not None:
                low, high = torch.aminmax(x.detach())
                if not (bounds[0] <= low.item() and high.item() <= bounds[1]):  # type: ignore[index]
                    return False
        elif self.seen < self.first or self.seen % self.every == 0:
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
        if not self.due(x):
            return False
        self.check(likelihood, x, policy, where)
        return True

    def due(self, x: Tensor | None) -> bool:
        """Count this batch and say whether its data are checked (then call :meth:`check` before any update)."""
        due = self._due(x)
        self.seen += 1
        return due

    def check(self, likelihood: Any, x: Tensor, policy: NonFinitePolicy, where: Any = None) -> bool:
        """Check ``x`` against ``likelihood``'s range now (see :meth:`__call__`; nothing counted).

        Returns ``False`` for NaN/inf data under ``policy="skip"`` (the step is then dropped), else ``True``.
        """
        try:
            likelihood.check_target(x)
        except ValueError as err:
            context = f" ({where()})" if where is not None else ""
            if bool(torch.isfinite(x).all()):
                raise ValueError(f"{err}{context}") from None
            if policy == "raise":
                raise NonFiniteError(f"{err}{context}") from None
            return False
        target_range = getattr(likelihood, "target_range", None)
        self._range = (float(target_range[0]), float(target_range[1])) if target_range else None
        return True


def agree_over_ranks(flags: Tensor) -> Tensor:
    """``[any non-finite, largest |loss|]`` over all processes: one skip decision on every rank (one all-reduce)."""
    import torch.distributed as dist

    flags = flags.clone()
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def refuse_sharding(trainer: Any) -> None:
    """Refuse strategies that shard the parameters over several processes (FSDP, DeepSpeed stage 3).

    Callbacks and evaluation call the model outside the module's forward, some on rank zero only; with
    sharded parameters those calls see shards. Data parallelism (DDP) is the supported way to scale.

    Raises:
        ValueError: For a sharding strategy with more than one process.
    """
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    if trainer.world_size <= 1:
        return
    strategy = trainer.strategy
    if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)) or getattr(strategy, "zero_stage_3", False):
        raise ValueError(
            f"VAE does not support sharded training ({type(strategy).__name__} with {trainer.world_size} "
            "processes): callbacks and evaluation call the model outside the sharded forward, some on rank "
            "zero only. Use data parallelism: Trainer(strategy='ddp', devices=N) (the networks fit on one device)."
        )


__all__ = [
    "CALIBRATION_STEPS",
    "DataCheck",
    "DivergenceError",
    "NonFiniteError",
    "NonFiniteGuard",
    "NonFinitePolicy",
    "agree_over_ranks",
    "nonfinite_optimizer_states",
    "nonfinite_parameters",
    "refuse_sharding",
]
