"""torchmetrics metrics of VAEs; each keeps sufficient statistics and delegates its math to ``functional/``."""

from lightning_vae.metrics.collapse import (
    ActiveUnits,
    CollapsedDimensions,
    KLPerDimension,
    MutualInformation,
    PosteriorMeanVariance,
)
from lightning_vae.metrics.dci import DCI
from lightning_vae.metrics.disentanglement import MutualInformationGap
from lightning_vae.metrics.interventional import BetaVAEScore, FactorVAEScore
from lightning_vae.metrics.kl_decomposition import KLDecomposition
from lightning_vae.metrics.nll import ImportanceWeightedNLL
from lightning_vae.metrics.sap import SAPScore

__all__ = [
    "ActiveUnits",
    "BetaVAEScore",
    "CollapsedDimensions",
    "DCI",
    "FactorVAEScore",
    "ImportanceWeightedNLL",
    "KLDecomposition",
    "KLPerDimension",
    "MutualInformation",
    "MutualInformationGap",
    "PosteriorMeanVariance",
    "SAPScore",
]
