"""The evaluation means of a training module: ``val/...`` and ``test/...`` values that are exact under DDP.

:class:`EvalMetrics` holds one torchmetrics ``MeanMetric`` per stage and term (sum states: N processes give
the numbers of one), the importance-weighted NLL, the non-finite batch record and bits per dimension. The
module logs what it returns; nothing here reads a value back to the host during an epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_vae.functional.math import at_least_float32, bits_per_dim
from lightning_vae.objective import ELBOTerms

Stage = Literal["val", "test"]

#: The objective's terms averaged over an evaluation epoch.
EVAL_TERMS = ("loss", "elbo", "recon", "kl")


class EvalMetrics(nn.Module):
    """Per-stage means of the objective's terms and of the importance-weighted NLL.

    NaN enters the means (``nan_strategy="disable"``): a non-finite batch makes the epoch value NaN, never
    optimistic; :meth:`nonfinite_report` names such batches at the end of the epoch. The means are kept in the
    type of the values they receive (float64 for a float64 model, else float32): torchmetrics states ignore
    ``module.double()``.

    Example::

        >>> import torch
        >>> from lightning_vae.objective import ELBOTerms
        >>> metrics = EvalMetrics()
        >>> t = torch.tensor
        >>> terms = ELBOTerms(t(2.0), t(-2.0), t(1.5), t(0.5), None, t(0.5), None, torch.zeros(1, 4))
        >>> _ = metrics.update("val", terms, n=4, batch_idx=0)
        >>> metrics.metric("val", "elbo").compute().item(), metrics.nonfinite_report("val") is None
        (-2.0, True)
    """

    def __init__(self, group_names: Sequence[str] = ("z",)) -> None:
        super().__init__()
        #: The per-group KL means exist for models with more than one latent group.
        self.groups = tuple(group_names) if len(group_names) > 1 else ()
        terms = (*EVAL_TERMS, "nll_iw", *(f"kl_{g}" for g in self.groups))
        self.means = nn.ModuleDict(
            {f"{stage}_{term}": MeanMetric(nan_strategy="disable") for stage in ("val", "test") for term in terms}
        )
        #: Means of the objective's extra terms (``val/accuracy``, ...), made on first sight of a name.
        self.extras = nn.ModuleDict()
        self._losses: list[tuple[int, Tensor]] = []
        self._state_dtype: torch.dtype | None = None

    def _match_dtype(self, value: Tensor) -> None:
        """Put every mean's states in ``value``'s type (at least float32), once per change of type."""
        dtype = at_least_float32(value).dtype
        if dtype != self._state_dtype:
            for metric in self.means.values():
                assert isinstance(metric, MeanMetric)
                metric.set_dtype(dtype)
            self._state_dtype = dtype

    def metric(self, stage: Stage, term: str) -> MeanMetric:
        """The mean of ``term`` in ``stage``."""
        metric = self.means[f"{stage}_{term}"]
        assert isinstance(metric, MeanMetric)
        return metric

    def reset(self, stage: Stage) -> None:
        """Reset the stage's means at the start of its epoch.

        States left by a run under inference mode (``trainer.validate``) cannot be updated in place by a later
        run under ``no_grad`` (validation inside ``fit``); a reset rebuilds them as normal tensors.
        """
        for term in (*EVAL_TERMS, "nll_iw", *(f"kl_{g}" for g in self.groups)):
            self.metric(stage, term).reset()
        for key, metric in self.extras.items():
            if key.startswith(f"{stage}_") and isinstance(metric, MeanMetric):
                metric.reset()
        self._losses = []

    def update(self, stage: Stage, terms: ELBOTerms, n: int, batch_idx: int) -> dict[str, MeanMetric]:
        """Add one batch of ``n`` examples; return the updated metrics by log name (``"val/elbo"``, ``"val/kl/z1"``)."""
        self._losses.append((batch_idx, terms.loss.detach()))
        self._match_dtype(terms.loss)
        updated = {}
        for term in EVAL_TERMS:
            metric = self.metric(stage, term)
            # The batch mean once per example: weighted by the batch size with no host-to-device copy of a
            # weight (and right whatever torchmetrics does with `weight` under nan_strategy="disable").
            metric.update(getattr(terms, term).reshape(1).expand(n))
            updated[f"{stage}/{term}"] = metric
        if self.groups and terms.kl_groups is not None:
            for group in self.groups:
                metric = self.metric(stage, f"kl_{group}")
                metric.update(terms.kl_groups[group].reshape(1).expand(n))
                updated[f"{stage}/kl/{group}"] = metric
        return updated

    def update_extra(self, stage: Stage, name: str, value: Tensor, n: int) -> MeanMetric:
        """Add a batch mean ``value`` of an objective's extra term over ``n`` examples (weighted by ``n``).

        The mean of each extra term is a torchmetrics ``MeanMetric`` (sum states), so its epoch value under DDP is
        that of one process (the objective's ``val/accuracy``, for instance), made the first time ``name`` comes.
        """
        key = f"{stage}_{name}"
        if key not in self.extras:
            self.extras[key] = MeanMetric(nan_strategy="disable").to(value.device)
        metric = self.extras[key]
        assert isinstance(metric, MeanMetric)
        metric.update(value.detach().reshape(1).expand(n))
        return metric

    def update_nll(self, stage: Stage, values: Tensor) -> MeanMetric:
        """Add the importance-weighted NLL of each example of a batch."""
        self._match_dtype(values)
        metric = self.metric(stage, "nll_iw")
        metric.update(values)
        return metric

    def nonfinite_report(self, stage: Stage) -> str | None:
        """A message naming the epoch's non-finite batches, or ``None``; forgets the epoch's losses."""
        losses, self._losses = self._losses, []
        if not losses:
            return None
        finite = torch.isfinite(torch.stack([loss.float() for _, loss in losses])).tolist()
        bad = [batch_idx for (batch_idx, _), ok in zip(losses, finite) if not ok]
        if not bad:
            return None
        return (
            f"{stage}: {len(bad)} of {len(losses)} batches had a non-finite loss (batch indices {bad[:10]}); "
            f"the {stage}/ epoch values are NaN. Check those batches for NaN/inf data, or the model for "
            "non-finite outputs."
        )

    def bits_per_dim(self, stage: Stage, data_shape: tuple[int, ...], importance_weighted: bool) -> Tensor | None:
        """The best NLL estimate of the epoch in bits per dimension (IW-NLL when computed, else -ELBO, a bound)."""
        key = "nll_iw" if importance_weighted else "elbo"
        metric = self.metric(stage, key)
        if not metric.update_called:
            return None
        nats = metric.compute() if importance_weighted else -metric.compute()
        return torch.as_tensor(bits_per_dim(nats, math.prod(data_shape)))


__all__ = ["EVAL_TERMS", "EvalMetrics", "Stage"]
