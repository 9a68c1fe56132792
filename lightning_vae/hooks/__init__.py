"""The training module's Lightning hooks by concern: the fault policy, checkpoints, evaluation (mixins of ``VAE``)."""

from lightning_vae.hooks.checkpoints import CheckpointHooks
from lightning_vae.hooks.evaluation import EvaluationSteps
from lightning_vae.hooks.faults import FaultHooks

__all__ = ["CheckpointHooks", "EvaluationSteps", "FaultHooks"]
