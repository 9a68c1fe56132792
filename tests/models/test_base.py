"""The model interface carries several latent groups: a two-group model trains under VAE with per-group KL."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule
from lightning_vae.distributions import BernoulliLikelihood, DiagonalGaussian
from lightning_vae.models import Generative, Inference, LatentVariableModel
from lightning_vae.objective import elbo_groups


class TwoGroups(LatentVariableModel):
    """p(z2) p(z1 | z2) p(x | z1) with q(z1 | x) q(z2 | z1): the smallest hierarchical model."""

    group_names = ("z2", "z1")

    def __init__(self) -> None:
        super().__init__()
        self.likelihood = BernoulliLikelihood()
        self.data_shape = (6,)
        self.q1 = nn.Linear(6, 8)
        self.q2 = nn.Linear(4, 4)
        self.p1 = nn.Linear(2, 8)
        self.px = nn.Linear(4, 6)

    def inference(self, x: Tensor, n_samples: int = 1) -> Inference:
        q1 = DiagonalGaussian(*self.q1(x).chunk(2, -1))
        z1 = q1.rsample((n_samples,))
        q2 = DiagonalGaussian(*self.q2(z1).chunk(2, -1))  # batch shape (k, B)
        return Inference({"z2": q2, "z1": q1}, {"z2": q2.rsample(), "z1": z1})

    def generative(self, z: Mapping[str, Tensor], x: Tensor | None = None) -> Generative:
        p2 = DiagonalGaussian(torch.zeros(2), torch.zeros(2))
        p1 = DiagonalGaussian(*self.p1(z["z2"]).chunk(2, -1))
        return Generative(self.px(z["z1"]), {"z2": p2, "z1": p1})

    def prior_sample(self, n: int) -> dict[str, Tensor]:
        z2 = torch.randn(1, n, 2)
        return {"z2": z2, "z1": DiagonalGaussian(*self.p1(z2).chunk(2, -1)).sample()}


def test_the_kl_of_every_group_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    model = TwoGroups()
    x = torch.rand(5, 6).round()
    inference, generative = model(x, n_samples=1)
    terms = elbo_groups(x, inference.posteriors, inference.z, generative.params, model.likelihood, generative.priors)

    def normal(d: DiagonalGaussian) -> Independent:
        return Independent(Normal(d.loc.double(), (0.5 * d.log_var.double()).exp()), 1)

    kl = {n: kl_divergence(normal(inference.posteriors[n]), normal(generative.priors[n])) for n in model.group_names}
    nll = -Independent(Bernoulli(logits=generative.params.double()), 1).log_prob(x.double())
    assert terms.kl_groups is not None and list(terms.kl_groups) == ["z2", "z1"]
    for name in model.group_names:
        torch.testing.assert_close(terms.kl_groups[name].double(), kl[name].mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.kl.double(), kl["z2"].mean() + kl["z1"].mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.loss.double(), (nll + kl["z2"] + kl["z1"]).mean(), rtol=1e-5, atol=1e-5)
    assert terms.kl_per_dim is not None and terms.kl_per_dim.shape == (6,)  # 2 + 4 dimensions, in group order
    assert terms.kl_per_dim_groups is not None and terms.kl_per_dim_groups["z1"].shape == (4,)


def test_the_iwae_bound_sums_log_ratios_over_groups() -> None:
    torch.manual_seed(1)
    model = TwoGroups()
    x = torch.rand(3, 6).round()
    inference, generative = model(x, n_samples=7)
    terms = elbo_groups(x, inference.posteriors, inference.z, generative.params, model.likelihood, generative.priors)
    z = inference.z
    log_w = model.log_joint(x, z) - sum(inference.posteriors[n].log_prob(z[n]) for n in model.group_names)
    assert terms.log_weights is not None
    torch.testing.assert_close(terms.log_weights, log_w.detach(), rtol=1e-5, atol=1e-5)


def test_a_two_group_model_trains_under_vae_and_logs_each_groups_kl(tmp_path) -> None:
    torch.manual_seed(0)
    vae = VAE(model=TwoGroups())
    x = torch.rand(32, 6).round()
    seen: list[dict] = []

    class Keep(Callback):
        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
            seen.append(outputs)

    trainer = Trainer(max_epochs=2, log_every_n_steps=1, logger=CSVLogger(tmp_path), enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                      callbacks=[Keep()])  # fmt: skip
    trainer.fit(vae, TensorDataModule(x, val=x, batch_size=8))
    logged = trainer.logged_metrics
    assert {"train/kl/z1", "train/kl/z2", "val/kl/z1", "val/elbo"} <= set(logged)
    assert torch.isfinite(logged["val/elbo"])
    outputs = seen[-1]
    assert set(outputs["groups"]) == {"z2", "z1"} and outputs["groups"]["z1"]["z"].shape == (8, 4)
    assert vae.sample(3).shape == (3, 6)
