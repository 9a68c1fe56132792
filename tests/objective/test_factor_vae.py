"""FactorVAE (objective/factor_vae.py) against 1Konny/FactorVAE's ``solver.py`` written in float64, and its own
optimizer under Lightning's manual optimization: clipping, 16-bit gradient scaling, checkpoint and resume."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from support.modules import tiny_vae, trainer_kwargs
from torch.distributions import Bernoulli, kl_divergence

from lightning_vae import VAE
from lightning_vae.data import Batch, TensorDataModule
from lightning_vae.functional.regularizers import permute_dims
from lightning_vae.objective import FactorVAE


class _Module:
    """What manual_step reads of a LightningModule, without Lightning: plain backward, the two optimizers."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self._optimizers = optimizers

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self._optimizers

    def manual_backward(self, loss: torch.Tensor) -> None:
        loss.backward()


def test_loss_and_both_gradients_equal_1konny_s_solver() -> None:
    torch.manual_seed(0)
    vae = tiny_vae(objective=FactorVAE(gamma=6.4, discriminator_hidden=16, discriminator_layers=3)).double()
    model, objective = vae.model, vae.objective
    x = torch.rand(24, 1, 8, 8, dtype=torch.float64).round()
    torch.manual_seed(1)
    terms = objective.training_terms(model, Batch(x), report=True, check=False)
    torch.manual_seed(1)
    # solver.py: x_recon, mu, logvar, z = VAE(x); vae_loss = recon + kld + gamma * (D_z[:, :1] - D_z[:, 1:]).mean()
    loc, log_var = model.encoder(x)
    z = loc + torch.randn_like(loc) * torch.exp(0.5 * log_var)
    recon = -Bernoulli(logits=model.decoder(z)).log_prob(x).flatten(1).sum(1).mean()
    kld = kl_divergence(
        torch.distributions.Independent(torch.distributions.Normal(loc, torch.exp(0.5 * log_var)), 1),
        torch.distributions.Independent(torch.distributions.Normal(torch.zeros_like(loc), 1.0), 1),
    ).mean()
    d = objective.discriminator
    d_z = d(z)
    vae_loss = recon + kld + 6.4 * (d_z[:, :1] - d_z[:, 1:]).mean()
    assert terms.loss.item() == pytest.approx(vae_loss.item(), rel=1e-10)
    assert (terms.extra or {})["density_ratio_tc"].item() == pytest.approx((d_z[:, 0] - d_z[:, 1]).mean().item())
    model_grads = torch.autograd.grad(vae_loss, list(model.parameters()))  # optim_VAE holds the VAE's weights only
    # D_tc_loss = 0.5 * (CE(D(z), 0) + CE(D(permute_dims(z).detach()), 1)), the discriminator's weights only.
    generator_state = torch.get_rng_state()
    z_perm = permute_dims(z.detach())
    zeros, ones = torch.zeros(24, dtype=torch.long), torch.ones(24, dtype=torch.long)
    d_loss = 0.5 * (F.cross_entropy(d(z.detach()), zeros) + F.cross_entropy(d(z_perm), ones))
    d_grads = torch.autograd.grad(d_loss, list(d.parameters()))

    torch.set_rng_state(generator_state)
    model_sgd = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves the gradients to read
    d_sgd = torch.optim.SGD(d.parameters(), lr=0.0)
    logged = objective.manual_step(_Module([model_sgd, d_sgd]), terms)  # type: ignore[arg-type]
    assert logged["discriminator_loss"].item() == pytest.approx(d_loss.item(), rel=1e-10)
    for p, g in zip(model.parameters(), model_grads):  # the posterior's soft clamp: a derivative within ~3e-7 of 1
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-9)
    for p, g in zip(d.parameters(), d_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-9)


def _data() -> TensorDataModule:
    torch.manual_seed(0)
    return TensorDataModule(torch.rand(96, 1, 8, 8).round(), batch_size=16, val_fraction=1 / 3, seed=0)


def _factor_vae(lr: float = 0.01, **kwargs) -> VAE:
    objective = FactorVAE(discriminator_hidden=32, discriminator_layers=3, **kwargs)
    return tiny_vae(objective=objective, optimizer=lambda params: torch.optim.SGD(params, lr=lr))


def test_trains_with_two_optimizers_and_resumes_both(tmp_path: Path) -> None:
    vae = _factor_vae()
    assert not vae.automatic_optimization
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1), log_every_n_steps=1)
    trainer.fit(vae, datamodule=_data())
    metrics = trainer.callback_metrics
    for key in ("train/density_ratio_tc", "train/discriminator_loss", "val/density_ratio_tc", "train/gamma"):
        assert torch.isfinite(metrics[key]), key
    assert trainer.global_step == 4  # Lightning counts each optimizer's step: two batches, two optimizers
    path = tmp_path / "factor.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert len(saved["optimizer_states"]) == 2
    d_state = saved["optimizer_states"][1]["state"]
    assert d_state and all("exp_avg" in s for s in d_state.values())  # the discriminator's Adam moments

    resumed = _factor_vae()
    seen: dict[str, object] = {}

    class _Record(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen["states"] = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
            seen["weights"] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=2), callbacks=[_Record()])
    trainer.fit(resumed, datamodule=_data(), ckpt_path=path)
    for got, want in zip(seen["states"], saved["optimizer_states"]):  # type: ignore[call-overload]
        for key, state in want["state"].items():
            for name, value in state.items():
                torch.testing.assert_close(got["state"][key][name], value)
    for name, value in saved["state_dict"].items():
        torch.testing.assert_close(seen["weights"][name], value)  # type: ignore[index]
    assert any(n.startswith("objective.discriminator.") for n in saved["state_dict"])
    assert trainer.global_step == 8


def test_the_trainer_s_clipping_is_refused_and_the_objective_clips(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match="manual optimization"):
        Trainer(**trainer_kwargs(tmp_path, max_epochs=1), gradient_clip_val=1.0).fit(_factor_vae(), datamodule=_data())
    vae = _factor_vae(lr=1.0, gradient_clip_val=1e-3)
    before = torch.cat([p.detach().flatten().clone() for p in vae.model.parameters()])
    Trainer(**trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)).fit(
        vae, datamodule=_data()
    )
    after = torch.cat([p.detach().flatten() for p in vae.model.parameters()])
    # SGD with lr 1: the step is the clipped gradient, of norm 1e-3 (the unclipped one is far larger).
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_16_bit_gradient_scaling_unscales_before_clipping(tmp_path: Path) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    vae = _factor_vae(lr=1.0, gradient_clip_val=1e-3)
    before = torch.cat([p.detach().flatten().clone() for p in vae.model.parameters()])
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0),
        plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
    )
    trainer.fit(vae, datamodule=_data())
    after = torch.cat([p.detach().flatten() for p in vae.model.parameters()])
    # Clipping the scaled gradients would leave a step of 1e-3 / 4096; the unscaled ones give 1e-3.
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-2)
    assert scaler.get_scale() == 2.0**12  # finite gradients: the scale was used and kept


def test_a_scheduler_is_refused_and_the_latent_size_is_checked() -> None:
    vae = tiny_vae(objective=FactorVAE(), lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1))
    with pytest.raises(ValueError, match="Expected no `lr_scheduler` with FactorVAE"):
        vae.configure_optimizers()
    with pytest.raises(ValueError, match="Expected FactorVAE's `latent_dim` to be the model's 4, got 3"):
        tiny_vae(objective=FactorVAE(latent_dim=3))
    with pytest.raises(ValueError, match="Expected `discriminator_layers` to be"):
        FactorVAE(discriminator_layers=1)
