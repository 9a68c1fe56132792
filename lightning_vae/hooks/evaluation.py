"""Validation, test and predict steps of the training module (a mixin), over :class:`EvalMetrics`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from torch.distributions import Distribution

from lightning_vae.data.common import unpack_batch
from lightning_vae.evaluation import EvalMetrics, Stage
from lightning_vae.functional.nll import iw_nll
from lightning_vae.guard import NonFiniteError, NonFiniteGuard
from lightning_vae.models.base import LatentVariableModel, per_example
from lightning_vae.objective import ELBOTerms


class EvaluationSteps(LightningModule):
    """Evaluates the objective with one sample and, with ``n_eval_samples > 1``, the importance-weighted NLL."""

    guard: NonFiniteGuard
    model: LatentVariableModel
    eval_metrics: EvalMetrics
    n_eval_samples: int
    iw_chunk_size: int
    compute_terms: Callable[..., tuple[ELBOTerms, Any]]
    encode: Callable[[Tensor], Distribution]

    def _eval_step(self, batch: Any, stage: Stage, batch_idx: int) -> dict[str, Any]:
        x = unpack_batch(batch)
        terms, out = self.compute_terms(x, n_samples=1, where=lambda: f"{stage} batch {batch_idx}")
        for name, metric in self.eval_metrics.update(stage, terms, x.shape[0], batch_idx).items():
            self.log(name, metric, prog_bar=name.endswith("/elbo"))
        if self.n_eval_samples > 1:
            # The same chunked estimator as ImportanceWeightedNLL: memory bounded by iw_chunk_size for any k.
            values = iw_nll(
                self,
                x,
                n_samples=self.n_eval_samples,
                chunk_size=self.iw_chunk_size,
                between_chunks=self._stop_if_asked,
            )
            self.log(f"{stage}/nll_iw", self.eval_metrics.update_nll(stage, values))
        inference = out.groups.inference
        per_dim = terms.kl_per_dim_groups or {}
        groups = {
            name: {"posterior": per_example(q, x.shape[0]), "z": inference.z[name][0], "kl_per_dim": per_dim.get(name)}
            for name, q in inference.posteriors.items()
        }
        first = groups[self.model.group_names[0]]
        return {"loss": terms.loss, **first, "groups": groups}

    def _stop_if_asked(self) -> None:
        """Between the chunks of a long importance-weighted estimate: honour a SIGTERM as Lightning's loops do."""
        if self._trainer is not None and self.trainer.received_sigterm:
            raise SIGTERMException

    def _end_eval_epoch(self, stage: Stage) -> None:
        report = self.eval_metrics.nonfinite_report(stage)
        if report is not None:
            if self._trainer is not None and self.trainer.sanity_checking:
                report = f"Sanity check (before training): {report}"
            if self.guard.policy == "raise":
                raise NonFiniteError(report)
            rank_zero_warn(report)
        shape = self.model.data_shape
        value = None if shape is None else self.eval_metrics.bits_per_dim(stage, shape, self.n_eval_samples > 1)
        if value is not None:  # already reduced across ranks; sync_dist only states that the value is global
            self.log(f"{stage}/bits_per_dim", value, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.eval_metrics.reset("val")

    def on_test_epoch_start(self) -> None:
        self.eval_metrics.reset("test")

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test", batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The posterior mean of the first latent group for each example, shape ``(B, D)``.

        A group conditioned on a sample of another (the top group of a stacked model) gives its mean at that sample.
        """
        mean = self.encode(unpack_batch(batch)).mean
        return mean[0] if mean.dim() == 3 else mean


__all__ = ["EvaluationSteps"]
