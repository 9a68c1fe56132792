"""β-TCVAE (Chen et al. 2018): the KL term taken apart and each part weighed, with the minibatch estimators of
``log q(z)`` that need the training set's size.

The loss is ``recon + α·MI + β·TC + γ·DWKL`` with the per-example terms of
:func:`~lightning_vae.functional.kl_decomposition.minibatch_kl_decomposition` (``vae_quant.py`` of
rtqichen/beta-tcvae: ``-modified_elbo`` with ``include_mutinfo``, ``lamb = 1 - γ``). α = β = γ = 1 is the ELBO with
the single-sample Monte Carlo KL.
"""

from __future__ import annotations

from typing import ClassVar

from lightning_vae.checks import check_choice
from lightning_vae.data.common import Batch
from lightning_vae.functional.kl_decomposition import Estimator, minibatch_kl_decomposition
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.objective.base import RunFacts, WeightedObjective, check_single_gaussian_group, gaussian_codes
from lightning_vae.objective.elbo import ELBOSettings, pass_terms
from lightning_vae.objective.terms import ELBOTerms

_PLAIN = ELBOSettings()


class BetaTCVAE(WeightedObjective, name="beta_tcvae"):
    """β-TCVAE: ``recon + α·I(n; z) + β·TC(z) + γ·Σ_j KL(q(z_j) || p(z_j))``, estimated on each minibatch.

    ``log q(z)`` and ``log q(z_j)`` at each sample come from the batch by minibatch-stratified (``"mss"``, the
    paper's appendix C.2; unbiased for ``q(z)``) or minibatch-weighted sampling (``"mws"``, ``vae_quant.py``'s
    default; its weights sum to ``1/N``). Both need ``N``, the training set's size: it comes from the data, as
    :class:`~lightning_vae.objective.RunFacts` the training module sets when training starts (never by hand).
    Before that (the sanity check, a module used outside a ``Trainer``) the batch is taken as the whole set
    (``N = B``), and validation batches are weighed with the training set's ``N``. A batch of one example takes
    the ``"mws"`` form (the stratified weights need two). The reported ``kl`` is the closed-form KL (what monitors
    read); ``extra`` holds the batch's ``mutual_info``, ``total_correlation`` and ``dimension_kl``, which sum to its
    Monte Carlo KL.

    Under DDP each process estimates ``log q(z)`` from its own batch of ``B`` examples with ``N`` the size of the
    whole training set (``RunFacts.dataset_size`` counts every process's examples): each process's batch is a
    uniform draw from the set, so each process's loss is the one-process estimator with batch ``B``, and the
    gradient DDP averages is the mean of ``world_size`` such estimates. It is not the estimator of one batch of
    ``world_size · B`` examples (that one would also weigh pairs of examples on different processes): with MSS its
    expectation is the same, with a larger variance; MWS's bias depends on ``B``, so it is that of batch ``B``
    (tests/objective/test_beta_tcvae.py runs one and two gloo processes).

    Needs one diagonal-Gaussian latent group under a factorised Gaussian prior (a
    :class:`~lightning_vae.models.VAEModel` with the standard normal or a learnable Gaussian prior).

    Args:
        alpha: Weight of the index-code mutual information.
        beta: Weight of the total correlation (the paper's β; 6 in its dSprites runs).
        gamma: Weight of the dimension-wise KL.
        estimator: ``"mss"`` or ``"mws"``.

    Example::

        >>> import torch
        >>> from lightning_vae.data import Batch
        >>> from lightning_vae.models import VAEModel
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> model = VAEModel(MLPEncoder((4,), latent_dim=2), MLPDecoder(2, (4,)))
        >>> objective = BetaTCVAE(beta=6.0)
        >>> objective.setup(RunFacts(dataset_size=1000))
        >>> terms = objective.training_terms(model, Batch(torch.rand(8, 4).round()), report=True, check=False)
        >>> sorted(terms.extra)
        ['dimension_kl', 'mutual_info', 'total_correlation']
    """

    weights: ClassVar[tuple[str, ...]] = ("alpha", "beta", "gamma")

    def __init__(self, alpha: float = 1.0, beta: float = 6.0, gamma: float = 1.0, estimator: Estimator = "mss") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.estimator: Estimator = check_choice("estimator", estimator, Estimator)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, estimator={self.estimator!r}"

    def setup(self, facts: RunFacts) -> None:
        if facts.dataset_size is None:
            raise ValueError(
                "BetaTCVAE needs the training set's size for its estimators of log q(z), got a training loader "
                "whose dataset has no len(): give the loader a sized dataset"
            )
        super().setup(facts)

    def check_model(self, model: LatentVariableModel) -> None:
        check_single_gaussian_group("BetaTCVAE", model)

    def forward(self, model: LatentVariableModel, batch: Batch, out: ModelOutput, report: bool) -> ELBOTerms:
        terms = pass_terms(model, batch, out, _PLAIN, report)
        codes = gaussian_codes("BetaTCVAE", out)
        size = codes.z.shape[0]
        n = max(size, self.facts.dataset_size or size)
        estimator: Estimator = "mws" if size < 2 else self.estimator
        parts = minibatch_kl_decomposition(
            codes.z, codes.loc, codes.log_var, n, estimator, codes.prior_loc, codes.prior_log_var
        )
        mi, tc, dw = parts.mutual_info.mean(), parts.total_correlation.mean(), parts.dimension_kl.mean()
        loss = terms.recon + self.alpha * mi + self.beta * tc + self.gamma * dw
        extra = None
        if report:
            extra = {"mutual_info": mi.detach(), "total_correlation": tc.detach(), "dimension_kl": dw.detach()}
        return terms._replace(loss=loss, extra=extra)


__all__ = ["BetaTCVAE"]
