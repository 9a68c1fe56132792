"""InfoVAE / MMD-VAE (Zhao et al. 2019; the penalty of WAE-MMD, Tolstikhin et al. 2018): the KL of each example
down-weighted and the aggregate posterior pulled to the prior by the maximum mean discrepancy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from lightning_vae.checks import check_choice, check_float
from lightning_vae.data.common import Batch
from lightning_vae.functional.regularizers import Kernel, mmd
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.objective.base import Objective, check_single_gaussian_group
from lightning_vae.objective.elbo import ELBOSettings, pass_terms
from lightning_vae.objective.terms import ELBOTerms


class InfoVAE(Objective, name="info_vae"):
    """InfoVAE: ``recon + (1 − α)·KL + (α + λ − 1)·MMD²(q(z), p(z))`` (Zhao et al. 2019, eq. 6).

    The squared MMD is the unbiased estimate (:func:`~lightning_vae.functional.regularizers.mmd`) between the
    batch's samples of ``q(z)`` (one per example) and as many samples of the prior (the model's ``prior_sample``),
    with an RBF (``exp(-d²/C)``) or inverse-multiquadric (``C/(C + d²)``) kernel, ``C = bandwidth · s`` summed over
    the ``scales`` ``s`` (default bandwidth ``2·D``; WAE's penalty is ``kernel="imq"`` with
    :data:`~lightning_vae.functional.regularizers.WAE_SCALES`). α = 1 is the MMD-VAE (no KL of each example);
    α = 0, λ = 1 the ELBO. Under DDP each process estimates the MMD from its own batch. ``extra`` reports ``mmd``
    (the squared MMD estimate; unbiased, so it may be negative).

    Args:
        alpha: α: the KL's weight is ``1 − α`` (at most 1).
        lambda_: λ: the MMD's weight is ``α + λ − 1`` (at least ``1 − α``, so that weight is >= 0).
        kernel: ``"rbf"`` or ``"imq"``.
        bandwidth: Base ``C`` of the kernel, or ``None`` for ``2·D``.
        scales: Multipliers of the bandwidth, one kernel each, summed.

    Example::

        >>> import torch
        >>> from lightning_vae.data import Batch
        >>> from lightning_vae.models import VAEModel
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> model = VAEModel(MLPEncoder((4,), latent_dim=2), MLPDecoder(2, (4,)))
        >>> objective = InfoVAE(alpha=0.0, lambda_=100.0)
        >>> objective.mmd_weight, objective.kl_weight
        (99.0, 1.0)
        >>> sorted(objective.training_terms(model, Batch(torch.rand(8, 4).round()), report=True, check=False).extra)
        ['mmd']
    """

    weights: ClassVar[tuple[str, ...]] = ("alpha", "lambda_")

    def __init__(
        self,
        alpha: float = 0.0,
        lambda_: float = 100.0,
        kernel: Kernel = "imq",
        bandwidth: float | None = None,
        scales: Sequence[float] = (1.0,),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.alpha, self.lambda_ = alpha, lambda_
        self.kernel: Kernel = check_choice("kernel", kernel, Kernel)
        self.bandwidth = None if bandwidth is None else check_float("bandwidth", bandwidth, low=0.0, strict_low=True)
        self.scales = tuple(check_float("scales", s, low=0.0, strict_low=True) for s in scales)
        if not self.scales:
            raise ValueError(f"Expected `scales` to hold at least one positive float, got {scales!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "alpha":
            value = check_float("alpha", value, high=1.0)
        elif name == "lambda_":
            value = check_float("lambda_", value)
        super().__setattr__(name, value)
        if name in self.weights and "alpha" in self.__dict__ and "lambda_" in self.__dict__:
            if self.alpha + self.lambda_ - 1 < 0:
                raise ValueError(
                    f"Expected `alpha` + `lambda_` >= 1 (a non-negative MMD weight), got alpha={self.alpha}, "
                    f"lambda_={self.lambda_}"
                )

    @property
    def kl_weight(self) -> float:
        """``1 − α``."""
        return 1.0 - self.alpha

    @property
    def mmd_weight(self) -> float:
        """``α + λ − 1``."""
        return self.alpha + self.lambda_ - 1.0

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, lambda_={self.lambda_}, kernel={self.kernel!r}"

    def check_model(self, model: LatentVariableModel) -> None:
        check_single_gaussian_group("InfoVAE", model)

    def forward(self, model: LatentVariableModel, batch: Batch, out: ModelOutput, report: bool) -> ELBOTerms:
        inference = out.inference
        terms = pass_terms(model, batch, out, ELBOSettings(beta=self.kl_weight), report)
        name = next(iter(inference.z))
        z = inference.z[name]
        if z.shape[0] != 1:
            raise ValueError(f"Expected one sample per example (1, B, D) for InfoVAE, got {tuple(z.shape)}")
        prior = model.prior_sample(z.shape[1])[name][0].to(z.dtype)
        value = mmd(z[0], prior, self.kernel, self.bandwidth, self.scales)
        loss = terms.loss + self.mmd_weight * value
        return terms._replace(loss=loss, extra={"mmd": value.detach()} if report else None)

    def state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "lambda_": self.lambda_}

    def load_state(self, state: Mapping[str, Any]) -> None:
        alpha, lambda_ = state.get("alpha", self.alpha), state.get("lambda_", self.lambda_)
        check_float("alpha", alpha, high=1.0)
        if check_float("lambda_", lambda_) + alpha - 1 < 0:
            raise ValueError(f"Expected `alpha` + `lambda_` >= 1, got alpha={alpha}, lambda_={lambda_}")
        self.__dict__["alpha"], self.__dict__["lambda_"] = float(alpha), float(lambda_)  # checked together above


__all__ = ["InfoVAE"]
