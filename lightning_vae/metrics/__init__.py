"""torchmetrics metrics of VAEs; each keeps sufficient statistics and delegates its math to ``functional/``."""

from lightning_vae.metrics.collapse import (
    ActiveUnits,
    CollapsedDimensions,
    KLPerDimension,
    MutualInformation,
    PosteriorMeanVariance,
)
from lightning_vae.metrics.disentanglement import MutualInformationGap
from lightning_vae.metrics.nll import ImportanceWeightedNLL

__all__ = [
    "ActiveUnits",
    "CollapsedDimensions",
    "ImportanceWeightedNLL",
    "KLPerDimension",
    "MutualInformation",
    "MutualInformationGap",
    "PosteriorMeanVariance",
]
