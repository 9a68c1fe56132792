"""FactorVAE (Kim & Mnih 2018): the ELBO plus γ times the total correlation, estimated by a discriminator that tells
samples of ``q(z)`` from dimension-wise permuted ones; the discriminator has its own optimizer (Lightning's manual
optimization, through the objective hooks of :class:`~lightning_vae.objective.Objective`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_vae.checks import check_choice, check_float, check_int
from lightning_vae.data.common import Batch
from lightning_vae.functional.regularizers import density_ratio_tc, discriminator_loss, permute_dims
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.objective.base import WeightedObjective, check_single_gaussian_group
from lightning_vae.objective.elbo import ELBOSettings, pass_terms
from lightning_vae.objective.terms import ELBOTerms

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule
    from torch.optim import Optimizer

ClipAlgorithm = Literal["norm", "value"]

_PLAIN = ELBOSettings()


def discriminator(latent_dim: int, hidden_size: int = 1000, layers: int = 6) -> nn.Sequential:
    """The discriminator of 1Konny/FactorVAE (``model.py``): ``layers`` linear layers of ``hidden_size`` units with
    LeakyReLU(0.2) between them, two logits out (column 0: "from ``q(z)``", column 1: "permuted")."""
    sizes = [latent_dim] + [hidden_size] * (layers - 1)
    modules: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        modules += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    modules.append(nn.Linear(sizes[-1], 2))
    return nn.Sequential(*modules)


class FactorVAE(WeightedObjective, name="factor_vae"):
    """FactorVAE: ``recon + KL + γ · mean_b [D(z_b)_0 − D(z_b)_1]``, with the discriminator ``D`` trained alongside.

    Each training step (:meth:`manual_step`) draws ``z ~ q(z|x)`` for the batch, evaluates the loss above with
    ``D``'s current weights held fixed (no gradient reaches ``D`` from it), and the discriminator's loss
    (:func:`~lightning_vae.functional.regularizers.discriminator_loss`) on the batch's codes (class 0) and on
    :func:`~lightning_vae.functional.regularizers.permute_dims` of them (class 1), both detached; one backward pass
    of their sum through ``module.manual_backward`` (scaled under 16-bit mixed precision), then the model's optimizer
    and the discriminator's step, each clipping its unscaled gradients by ``gradient_clip_val`` first
    (:meth:`before_optimizer_step`; Lightning refuses ``Trainer(gradient_clip_val=...)`` under manual optimization).
    The gradients are those of Kim & Mnih's
    Algorithm 1 and 1Konny/FactorVAE's ``solver.py``, except that the discriminator sees the codes of the same batch
    (disentanglement_lib's form) where 1Konny draws a second batch: one encoder pass, not two. Under 16-bit mixed
    precision both optimizers share Lightning's gradient scaler, which updates after each step: the discriminator's
    gradients are unscaled with the scale after the model's step (the same one, except on the steps where the
    scaler grows or backs off).

    The discriminator is an ``nn.Module`` child (``objective.discriminator``): its weights are in the module's
    ``state_dict``, and its optimizer's state in Lightning's checkpoints (both optimizers resume). ``extra`` reports
    the density-ratio TC estimate (``density_ratio_tc``) and, in training, ``discriminator_loss``. The module's
    ``optimizer`` trains the model (1Konny: Adam, lr 1e-4, betas (0.9, 0.999)); an ``lr_scheduler`` is refused.

    Args:
        gamma: Weight of the TC estimate (1Konny's dSprites setting 6.4; Kim & Mnih report 10 to 100).
        latent_dim: Size of z; ``None`` takes the model's ``latent_dim`` when the module is built.
        discriminator_hidden: Units of the discriminator's hidden layers.
        discriminator_layers: Its linear layers (at least 2).
        discriminator_lr: Adam's learning rate for the discriminator (1Konny: 1e-4).
        discriminator_betas: Adam's betas for the discriminator (1Konny: (0.5, 0.9)).
        gradient_clip_val: Clip each optimizer's gradients to this norm (or value); ``None`` does not clip.
        gradient_clip_algorithm: ``"norm"`` or ``"value"``.
    """

    weights: ClassVar[tuple[str, ...]] = ("gamma",)
    manual_optimization: ClassVar[bool] = True

    def __init__(
        self,
        gamma: float = 6.4,
        latent_dim: int | None = None,
        discriminator_hidden: int = 1000,
        discriminator_layers: int = 6,
        discriminator_lr: float = 1e-4,
        discriminator_betas: tuple[float, float] = (0.5, 0.9),
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: ClipAlgorithm = "norm",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.gamma = gamma
        self.hidden = check_int("discriminator_hidden", discriminator_hidden, low=1)
        self.layers = check_int("discriminator_layers", discriminator_layers, low=2)
        self.lr = check_float("discriminator_lr", discriminator_lr, low=0.0, strict_low=True)
        if len(discriminator_betas) != 2:
            raise ValueError(f"Expected `discriminator_betas` to be two floats in [0, 1), got {discriminator_betas!r}")
        low, high = (check_float("discriminator_betas", b, low=0.0, high=1.0) for b in discriminator_betas)
        self.betas = (low, high)
        self.clip = None if gradient_clip_val is None else check_float("gradient_clip_val", gradient_clip_val, low=0.0)
        self.clip_algorithm = check_choice("gradient_clip_algorithm", gradient_clip_algorithm, ClipAlgorithm)
        self.discriminator: nn.Sequential | None = None
        if latent_dim is not None:
            self.discriminator = discriminator(check_int("latent_dim", latent_dim, low=1), self.hidden, self.layers)
        #: The codes of the last training step's pass, detached: what the discriminator trains on.
        self._codes: Tensor | None = None

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"

    def check_model(self, model: LatentVariableModel) -> None:
        check_single_gaussian_group("FactorVAE", model)
        size = getattr(model, "latent_dim", None)
        if self.discriminator is None:
            if size is None:
                raise ValueError("FactorVAE needs the latent size: give it `latent_dim` or a model that knows its own")
            self.discriminator = discriminator(int(size), self.hidden, self.layers)
        elif size is not None and self.discriminator[0].in_features != size:
            raise ValueError(
                f"Expected FactorVAE's `latent_dim` to be the model's {size}, got {self.discriminator[0].in_features}"
            )

    def _discriminator(self) -> nn.Sequential:
        if self.discriminator is None:
            raise ValueError("FactorVAE's discriminator is built with the module (VAE(objective=...)) or `latent_dim`")
        return self.discriminator

    def forward(self, model: LatentVariableModel, batch: Batch, out: ModelOutput, report: bool) -> ELBOTerms:
        inference = out.inference
        terms = pass_terms(model, batch, out, _PLAIN, report)
        z = next(iter(inference.z.values()))
        if z.shape[0] != 1:
            raise ValueError(f"Expected one sample per example (1, B, D) for FactorVAE, got {tuple(z.shape)}")
        z = z[0]
        net = self._discriminator()
        # The VAE's term sees D's weights as constants: its gradient reaches the encoder only.
        fixed = {name: p.detach() for name, p in net.named_parameters()}
        tc = density_ratio_tc(functional_call(net, fixed, (z.to(fixed["0.weight"].dtype),))).mean()
        if torch.is_grad_enabled():
            self._codes = z.detach()
        return terms._replace(
            loss=terms.loss + self.gamma * tc, extra={"density_ratio_tc": tc.detach()} if report else None
        )

    def configure_optimizers(self) -> list[Optimizer]:
        return [torch.optim.Adam(self._discriminator().parameters(), lr=self.lr, betas=self.betas)]

    def manual_step(self, module: LightningModule, terms: ELBOTerms) -> dict[str, Tensor]:
        if self._codes is None:
            raise ValueError("FactorVAE.manual_step needs the codes of this step's pass: call training_terms first")
        codes, self._codes = self._codes, None
        net = self._discriminator()
        d_loss = discriminator_loss(net(codes), net(permute_dims(codes)))
        optimizers = module.optimizers()
        if not isinstance(optimizers, list) or len(optimizers) != 2:
            raise ValueError(f"Expected the model's optimizer and the discriminator's, got {optimizers!r}")
        for optimizer in optimizers:
            optimizer.zero_grad()
        module.manual_backward(terms.loss + d_loss)
        for optimizer in optimizers:
            optimizer.step()  # unscales, then before_optimizer_step clips
        return {"discriminator_loss": d_loss.detach()}

    def before_optimizer_step(self, module: LightningModule, optimizer: Optimizer) -> None:
        if self.clip is not None:
            module.clip_gradients(optimizer, self.clip, self.clip_algorithm)


__all__ = ["FactorVAE", "discriminator"]
