"""Stacked (Burda et al. 2015) and Ladder (Sønderby et al. 2016) models against independent references: what both
hierarchical models share (the ladder's own inference is in test_ladder.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from support.modules import trainer_kwargs
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from lightning_vae import VAE
from lightning_vae.callbacks import ExactResume
from lightning_vae.data import TensorDataModule
from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.models import LadderVAEModel, StackedVAEModel
from lightning_vae.objective import elbo_groups

SHAPE = (1, 6, 6)


def _models() -> dict:
    torch.manual_seed(0)
    return {
        "stacked": StackedVAEModel(SHAPE, latent_sizes=(5, 3, 2), hidden_sizes=((16,), (8,), (8,))),
        "ladder": LadderVAEModel(SHAPE, latent_sizes=(5, 3, 2), hidden_sizes=((16,), (8,), (8,))),
    }


def _normal(d: DiagonalGaussian) -> Independent:
    return Independent(Normal(d.loc.double(), (0.5 * d.log_var.double()).exp()), 1)


@pytest.mark.parametrize("name", ["stacked", "ladder"])
def test_log_joint_and_kl_of_every_layer_match_torch_distributions(name: str) -> None:
    model = _models()[name]
    x = torch.rand(4, *SHAPE).round()
    inference, generative = model(x, n_samples=3)
    z = inference.z
    reference = Independent(Bernoulli(logits=generative.params.double()), 3).log_prob(x.double())
    reference = reference + Independent(Normal(torch.zeros(2).double(), torch.ones(2).double()), 1).log_prob(
        z["z3"].double()
    )
    for i, above in ((2, "z3"), (1, "z2")):
        loc, log_var = model.top_down[i - 1](z[above])
        prior = DiagonalGaussian(loc, log_var)
        reference = reference + _normal(prior).log_prob(z[f"z{i}"].double())
    torch.testing.assert_close(model.log_joint(x, z).double(), reference, rtol=1e-5, atol=1e-4)
    terms = elbo_groups(x, inference.posteriors, z, generative.params, model.likelihood, generative.priors)
    assert terms.kl_groups is not None and list(terms.kl_groups) == ["z3", "z2", "z1"]
    for group in model.group_names:
        kl = kl_divergence(_normal(inference.posteriors[group]), _normal(generative.priors[group]))
        torch.testing.assert_close(terms.kl_groups[group].double(), kl.mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["stacked", "ladder"])
def test_the_iwae_bound_is_above_the_elbo_and_grows_with_k(name: str) -> None:
    model = _models()[name]
    x = torch.rand(64, *SHAPE).round()
    bounds = {}
    with torch.no_grad():
        for k in (1, 5, 50):
            values = []
            for seed in range(4):
                torch.manual_seed(seed)
                inference, generative = model(x, n_samples=k)
                terms = elbo_groups(x, inference.posteriors, inference.z, generative.params, model.likelihood,
                                    generative.priors)  # fmt: skip
                values.append(float(terms.elbo if k == 1 else terms.iwae))
            bounds[k] = sum(values) / len(values)
    assert bounds[1] < bounds[5] < bounds[50], bounds


@pytest.mark.parametrize("name", ["stacked", "ladder"])
def test_a_hierarchical_model_trains_under_vae_and_reloads_from_its_checkpoint(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = VAE(model=_models()[name], n_eval_samples=4)
    x = torch.rand(16, *SHAPE).round()
    trainer = Trainer(max_epochs=2, log_every_n_steps=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")  # fmt: skip
    trainer.fit(vae, TensorDataModule(x, val=x, batch_size=8))
    logged = trainer.logged_metrics
    assert {"train/kl/z1", "train/kl/z3", "val/kl/z2", "val/nll_iw"} <= set(logged), sorted(logged)
    assert all(torch.isfinite(v) for v in logged.values())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = VAE.load_from_checkpoint(path)  # the model recorded its arguments: nothing to pass again
    assert type(loaded.model) is type(vae.model)
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert loaded.sample(3).shape == (3, *SHAPE)


def test_free_bits_per_latent_group_and_per_group_kl_weights() -> None:
    model = _models()["stacked"]
    x = torch.rand(8, *SHAPE).round()
    torch.manual_seed(3)
    inference, generative = model(x)
    args = (x, inference.posteriors, inference.z, generative.params, model.likelihood, generative.priors)
    plain = elbo_groups(*args)
    assert plain.kl_groups is not None
    kls = {g: v.item() for g, v in plain.kl_groups.items()}
    lam = sorted(kls.values())[1]  # above the smallest group's KL, below the largest
    clamped = elbo_groups(*args, free_bits=lam, free_bits_mode="latent_group")
    expected = plain.recon.item() + sum(max(lam, v) for v in kls.values())
    assert clamped.loss.item() == pytest.approx(expected, rel=1e-5)
    weighted = elbo_groups(*args, beta=0.5, group_betas={"z3": 0.0, "z1": 2.0})
    expected = plain.recon.item() + 0.0 * kls["z3"] + 0.5 * kls["z2"] + 2.0 * kls["z1"]
    assert weighted.loss.item() == pytest.approx(expected, rel=1e-5)
    assert weighted.elbo is not None and weighted.elbo.item() == pytest.approx(plain.elbo.item())  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="latent groups of the model"):
        elbo_groups(*args, group_betas={"z9": 1.0})
    with pytest.raises(ValueError, match="free_bits_mode='latent_group'"):
        elbo_groups(*args, free_bits=0.1, free_bits_mode="dim", group_betas={"z1": 1.0})


def test_group_kl_weights_train_and_survive_a_checkpoint(tmp_path: Path) -> None:
    vae = VAE(model=_models()["ladder"], free_bits=0.05, free_bits_mode="latent_group")
    vae.group_betas = {"z3": 0.2}
    x = torch.rand(16, *SHAPE).round()
    trainer = Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, accelerator="cpu")  # fmt: skip
    trainer.fit(vae, TensorDataModule(x, batch_size=8))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert VAE.load_from_checkpoint(tmp_path / "last.ckpt").group_betas == {"z3": 0.2}


# ---------------------------------------------------------------- hierarchical_training
SMALL = (1, 4, 4)
MODELS = {
    "stacked": lambda: StackedVAEModel(SMALL, latent_sizes=(4, 2), hidden_sizes=((8,), (8,))),
    "ladder": lambda: LadderVAEModel(SMALL, latent_sizes=(4, 2), hidden_sizes=((8,), (8,))),
}


def _data() -> TensorDataModule:
    x = torch.rand(48, *SMALL, generator=torch.Generator().manual_seed(0)).round()
    return TensorDataModule(x, batch_size=8, shuffle=True, seed=3)


def _run(tmp_path: Path, name: str, max_steps: int, ckpt_path: str | None = None) -> VAE:
    torch.manual_seed(0)
    vae = VAE(model=MODELS[name]())
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    kwargs = trainer_kwargs(tmp_path, max_steps=max_steps, max_epochs=-1, limit_train_batches=None,
                            limit_val_batches=0, enable_checkpointing=True)  # fmt: skip
    trainer = Trainer(**kwargs, callbacks=[ExactResume(), checkpoint])
    trainer.fit(vae, datamodule=_data(), ckpt_path=ckpt_path)
    return vae


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_run_resumed_mid_epoch_is_bit_identical(name: str, tmp_path: Path) -> None:
    whole = _run(tmp_path / "whole", name, max_steps=9)
    _run(tmp_path / "part", name, max_steps=4)  # stops in the middle of the first epoch (6 batches)
    resumed = _run(tmp_path / "resumed", name, max_steps=9, ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_autocast_on_cpu_trains_with_a_float32_objective(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = VAE(model=MODELS[name](), n_eval_samples=4)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, precision="bf16-mixed", log_every_n_steps=1))
    x = torch.rand(32, *SMALL).round()
    trainer.fit(vae, TensorDataModule(x, val=x, batch_size=8))
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(v) for v in metrics.values()) and "val/kl/z2" in metrics
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, _ = vae.compute_terms(x)
    assert terms.loss.dtype == torch.float32 and terms.kl_groups is not None
    assert all(v.dtype == torch.float32 for v in terms.kl_groups.values())


def test_kl_annealing_of_one_group(tmp_path: Path) -> None:
    from lightning_vae.callbacks import KLAnnealing

    seen: list[tuple[float, dict]] = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append((pl_module.beta, dict(pl_module.group_betas)))

    vae = VAE(model=MODELS["stacked"]())
    annealing = KLAnnealing("linear", start=0.0, end=1.0, length=4, group="z2")
    trainer = Trainer(**trainer_kwargs(tmp_path, max_steps=5, max_epochs=-1, limit_train_batches=None,
                                       log_every_n_steps=1), callbacks=[annealing, Record()])  # fmt: skip
    trainer.fit(vae, datamodule=_data())
    assert [b for b, _ in seen] == [1.0] * 5  # β of the other groups untouched
    assert [g["z2"] for _, g in seen] == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="latent groups"):
        Trainer(**trainer_kwargs(tmp_path, max_steps=1), callbacks=[KLAnnealing(group="z7")]).fit(
            VAE(model=MODELS["stacked"]()), datamodule=_data()
        )


def test_predict_gives_one_mean_per_example() -> None:
    vae = VAE(model=MODELS["stacked"]())
    assert vae.predict_step(torch.rand(5, *SMALL).round(), 0).shape == (5, 2)
