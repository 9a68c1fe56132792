"""InfoVAE (objective/info_vae.py) against Zhao et al.'s loss with WAE's ``mmd_penalty`` (tolstikhin/wae)
re-implemented in NumPy float64."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import tiny_vae, trainer_kwargs
from support.papers import wae_mmd_penalty
from torch.distributions import Bernoulli, kl_divergence

from lightning_vae import VAE
from lightning_vae.data import Batch, TensorDataModule
from lightning_vae.functional.regularizers import WAE_SCALES
from lightning_vae.objective import InfoVAE, model_pass


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize(("alpha", "lambda_"), [(0.0, 100.0), (1.0, 1000.0), (0.5, 10.0)])
def test_the_loss_is_recon_plus_weighted_kl_plus_weighted_wae_mmd(kernel: str, alpha: float, lambda_: float) -> None:
    torch.manual_seed(0)
    model = tiny_vae().model.double()
    x = torch.rand(32, 1, 8, 8, dtype=torch.float64).round()
    out = model_pass(model, Batch(x), 1)
    sigma2_k = 1.5
    if kernel == "imq":  # WAE's penalty: bandwidth 2 D (sigma2_p = 1), its seven scales
        objective = InfoVAE(alpha, lambda_, "imq", scales=WAE_SCALES)
    else:  # WAE's RBF branch exp(-d^2 / (2 sigma2_k))
        objective = InfoVAE(alpha, lambda_, "rbf", bandwidth=2 * sigma2_k)
    torch.manual_seed(5)
    terms = objective(model, Batch(x), out, report=True)
    torch.manual_seed(5)
    prior = model.prior_sample(32)["z"][0]  # the same draw of p(z)
    qz = out.inference.z["z"][0].detach().numpy()
    penalty = wae_mmd_penalty(qz, prior.numpy(), "IMQ" if kernel == "imq" else "RBF", 4, sigma2_k=sigma2_k)
    q = out.inference.posteriors["z"]
    recon = -Bernoulli(logits=out.generative.params[0]).log_prob(x).flatten(1).sum(1).mean()
    kl = kl_divergence(q, out.generative.priors["z"]).mean()
    expected = recon.item() + (1 - alpha) * kl.item() + (alpha + lambda_ - 1) * penalty
    assert terms.loss.item() == pytest.approx(expected, rel=1e-10)
    assert (terms.extra or {})["mmd"].item() == pytest.approx(penalty, rel=1e-10, abs=1e-14)
    assert terms.kl.item() == pytest.approx(kl.item(), rel=1e-8)  # the reported KL is the raw one


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="Expected `kernel` to be one of"):
        InfoVAE(kernel="gauss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `alpha` to be a finite float <= 1"):
        InfoVAE(alpha=2.0)
    with pytest.raises(ValueError, match="non-negative MMD weight"):
        InfoVAE(alpha=0.0, lambda_=0.5)
    with pytest.raises(ValueError, match="Expected `scales` to hold at least one"):
        InfoVAE(scales=())
    with pytest.raises(ValueError, match="Expected `bandwidth` to be a finite float > 0"):
        InfoVAE(bandwidth=0.0)


def test_trains_and_its_weights_survive_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=16, val_fraction=0.25, seed=0)
    vae = tiny_vae(objective=InfoVAE(alpha=0.5, lambda_=20.0, kernel="rbf"))
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1), log_every_n_steps=1)
    trainer.fit(vae, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train/mmd"]) and trainer.callback_metrics["train/lambda_"] == 20.0
    vae.objective.lambda_ = 30.0
    trainer.save_checkpoint(tmp_path / "info.ckpt")
    reloaded = VAE.load_from_checkpoint(tmp_path / "info.ckpt").objective
    assert isinstance(reloaded, InfoVAE) and (reloaded.kernel, reloaded.lambda_, reloaded.alpha) == ("rbf", 30.0, 0.5)
