"""DIP-VAE (objective/dip_vae.py) against disentanglement_lib's ``DIPVAE`` re-implemented in NumPy float64."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import tiny_vae, trainer_kwargs
from support.papers import dip_reference
from torch.distributions import Bernoulli, kl_divergence

from lightning_vae import VAE
from lightning_vae.data import Batch, TensorDataModule
from lightning_vae.objective import DIPVAE, model_pass


@pytest.mark.parametrize(("dip_type", "lambda_od", "lambda_d"), [("i", 10.0, 100.0), ("ii", 5.0, 5.0)])
def test_the_loss_equals_disentanglement_lib(dip_type: str, lambda_od: float, lambda_d: float) -> None:
    torch.manual_seed(0)
    model = tiny_vae().model.double()
    x = torch.rand(32, 1, 8, 8, dtype=torch.float64).round()
    out = model_pass(model, Batch(x), 1)
    terms = DIPVAE(dip_type, lambda_od, lambda_d)(model, Batch(x), out, report=True)  # type: ignore[arg-type]
    q = out.inference.posteriors["z"]
    # disentanglement_lib: reconstruction loss + KL (closed form) + regularizer, batch means.
    recon = -Bernoulli(logits=out.generative.params[0]).log_prob(x).flatten(1).sum(1).mean()
    kl = kl_divergence(q, out.generative.priors["z"]).mean()
    _, penalty = dip_reference(q.loc.detach().numpy(), q.log_var.detach().numpy(), lambda_od, lambda_d, dip_type)
    assert terms.loss.item() == pytest.approx((recon + kl).item() + penalty, rel=1e-10)
    assert (terms.extra or {})["dip"].item() == pytest.approx(penalty, rel=1e-10)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="Expected `dip_type` to be one of"):
        DIPVAE("iii")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `lambda_od` to be a finite float >= 0"):
        DIPVAE(lambda_od=-1.0)


def test_trains_and_its_weights_survive_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=16, val_fraction=0.25, seed=0)
    vae = tiny_vae(objective=DIPVAE("ii", lambda_od=2.0, lambda_d=3.0))
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1), log_every_n_steps=1)
    trainer.fit(vae, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train/dip"]) and trainer.callback_metrics["train/lambda_d"] == 3.0
    vae.objective.lambda_od = 7.0
    trainer.save_checkpoint(tmp_path / "dip.ckpt")
    reloaded = VAE.load_from_checkpoint(tmp_path / "dip.ckpt").objective
    assert isinstance(reloaded, DIPVAE) and (reloaded.dip_type, reloaded.lambda_od) == ("ii", 7.0)
