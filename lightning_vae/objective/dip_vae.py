"""DIP-VAE I and II (Kumar et al. 2018): the ELBO plus a penalty that pushes a covariance of the codes to the
identity, as ``DIPVAE`` of google-research/disentanglement_lib (``vae.py``)."""

from __future__ import annotations

from typing import ClassVar

from lightning_vae.checks import check_choice
from lightning_vae.data.common import Batch
from lightning_vae.functional.regularizers import DipType, dip_covariance, dip_regularizer
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.objective.base import WeightedObjective, check_single_gaussian_group, gaussian_codes
from lightning_vae.objective.elbo import ELBOSettings, pass_terms
from lightning_vae.objective.terms import ELBOTerms

_PLAIN = ELBOSettings()


class DIPVAE(WeightedObjective, name="dip_vae"):
    """DIP-VAE: ``recon + KL + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²`` over the batch.

    ``C`` is the covariance of the posterior means (``"i"``) or of the aggregate posterior, the means' covariance
    plus the mean posterior variance (``"ii"``) (:func:`~lightning_vae.functional.regularizers.dip_covariance`),
    estimated on each batch (under DDP on each process's batch). The paper's dSprites settings are
    ``λ_od = 10, λ_d = 100`` for DIP-VAE I; disentanglement_lib uses ``λ_d = 10 λ_od`` for I and ``λ_d = λ_od``
    for II. ``extra`` reports the penalty as ``dip``.

    Args:
        dip_type: ``"i"`` or ``"ii"``.
        lambda_od: Weight of the off-diagonal entries.
        lambda_d: Weight of the diagonal entries' distance to 1.

    Example::

        >>> import torch
        >>> from lightning_vae.data import Batch
        >>> from lightning_vae.models import VAEModel
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> model = VAEModel(MLPEncoder((4,), latent_dim=2), MLPDecoder(2, (4,)))
        >>> terms = DIPVAE("ii").training_terms(model, Batch(torch.rand(8, 4).round()), report=True, check=False)
        >>> bool(terms.loss >= terms.recon + terms.kl)
        True
    """

    weights: ClassVar[tuple[str, ...]] = ("lambda_od", "lambda_d")

    def __init__(self, dip_type: DipType = "i", lambda_od: float = 10.0, lambda_d: float = 100.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dip_type: DipType = check_choice("dip_type", dip_type, DipType)
        self.lambda_od, self.lambda_d = lambda_od, lambda_d

    def extra_repr(self) -> str:
        return f"dip_type={self.dip_type!r}, lambda_od={self.lambda_od}, lambda_d={self.lambda_d}"

    def check_model(self, model: LatentVariableModel) -> None:
        check_single_gaussian_group("DIPVAE", model)

    def forward(self, model: LatentVariableModel, batch: Batch, out: ModelOutput, report: bool) -> ELBOTerms:
        terms = pass_terms(model, batch, out, _PLAIN, report)
        codes = gaussian_codes("DIPVAE", out)
        covariance = dip_covariance(codes.loc, codes.log_var if self.dip_type == "ii" else None, self.dip_type)
        penalty = dip_regularizer(covariance, self.lambda_od, self.lambda_d)
        return terms._replace(loss=terms.loss + penalty, extra={"dip": penalty.detach()} if report else None)


__all__ = ["DIPVAE"]
