"""The training module's parts by concern (mixins of ``VAE``): the training step, evaluation, the model's parts,
checkpoints, the fault policy."""

from lightning_vae.hooks.checkpoints import CheckpointHooks
from lightning_vae.hooks.evaluation import EvaluationSteps
from lightning_vae.hooks.faults import FaultHooks
from lightning_vae.hooks.parts import ModelParts
from lightning_vae.hooks.training import TrainingStep

__all__ = ["CheckpointHooks", "EvaluationSteps", "FaultHooks", "ModelParts", "TrainingStep"]
