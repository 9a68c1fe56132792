"""FlowVAEModel (models/flow.py): every posterior through the model interface, the IWAE bound against the exact
log p(x) of a linear Gaussian model and its order in k, training under VAE and Lightning, reloading from a
checkpoint (alone, or with the model passed again), and the arguments it refuses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule
from lightning_vae.distributions import (
    DiagonalGaussian,
    FlowPosterior,
    FullCovarianceGaussian,
    GaussianLikelihood,
    full_covariance_kl,
)
from lightning_vae.functional.nll import iw_nll
from lightning_vae.models import FlowVAEModel, PosteriorKind, VAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder
from lightning_vae.objective import elbo_groups

KINDS: tuple[PosteriorKind, ...] = ("iaf", "planar", "full_covariance", "diagonal")


class LinearEncoder(nn.Module):
    """``x -> (loc, log_var[, h])`` by one linear layer; records no arguments (not describable)."""

    def __init__(self, n_in: int, latent_dim: int, context_dim: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.context_dim = latent_dim, context_dim
        self.net = nn.Linear(n_in, 2 * latent_dim + context_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.net(x.flatten(1))
        loc, log_var, h = out.split([self.latent_dim, self.latent_dim, self.context_dim], dim=-1)
        return (loc, log_var, torch.tanh(h)) if self.context_dim else (loc, log_var)


def _mlp_model(kind: PosteriorKind, **kwargs: Any) -> FlowVAEModel:
    encoder = MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(16,))
    return FlowVAEModel(encoder, MLPDecoder(3, (1, 4, 4), hidden_sizes=(16,)), posterior=kind, n_flows=2,
                        hidden_sizes=(16,), **kwargs)  # fmt: skip


@pytest.mark.parametrize(("kind", "context_dim"), [(kind, 0) for kind in KINDS] + [("iaf", 5), ("full_covariance", 5)])
def test_every_posterior_through_the_model_interface(kind: PosteriorKind, context_dim: int) -> None:
    torch.manual_seed(0)
    model = FlowVAEModel(LinearEncoder(6, 3, context_dim), nn.Linear(3, 6), posterior=kind, n_flows=3,
                         hidden_sizes=(8,), context_dim=context_dim, data_shape=(6,))  # fmt: skip
    x = torch.rand(4, 6).round()
    inference, generative = model(x, n_samples=5)
    q, z = inference.posteriors["z"], inference.z["z"]
    expected = {"iaf": FlowPosterior, "planar": FlowPosterior, "full_covariance": FullCovarianceGaussian}
    assert isinstance(q, expected.get(kind, DiagonalGaussian))
    assert z.shape == (5, 4, 3) and generative.params.shape == (5, 4, 6)
    terms = elbo_groups(x, inference.posteriors, inference.z, generative.params, model.likelihood, generative.priors)
    assert torch.isfinite(terms.loss) and terms.iwae is not None
    terms.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if kind in ("iaf", "planar"):  # the flows receive gradients
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.flows.parameters())
    assert model.reconstruct(x).shape == (4, 6) and model.sample(2).shape == (2, 6)


def test_diagonal_posterior_is_the_vae_model_and_full_covariance_starts_there() -> None:
    torch.manual_seed(0)
    flow = _mlp_model("diagonal")
    plain = VAEModel(flow.encoder, flow.decoder)
    x = torch.rand(6, 1, 4, 4).round()
    torch.manual_seed(1)
    a = flow(x)
    torch.manual_seed(1)
    b = plain(x)
    torch.testing.assert_close(a.inference.z["z"], b.inference.z["z"])
    torch.testing.assert_close(a.generative.params, b.generative.params)
    full = FlowVAEModel(flow.encoder, flow.decoder, posterior="full_covariance")
    q = full.posterior_distribution(x)
    assert isinstance(q, FullCovarianceGaussian)
    d = plain.encode(x)
    assert isinstance(d, DiagonalGaussian)
    torch.testing.assert_close(full_covariance_kl(q), 0.5 * (d.log_var.exp() + d.loc**2 - 1 - d.log_var).sum(-1))


@pytest.mark.parametrize("kind", ["iaf", "planar", "full_covariance"])
def test_iwae_approaches_the_exact_log_likelihood_of_a_linear_gaussian_model(kind: PosteriorKind) -> None:
    """x = W z + b + σ ε: log p(x) = log N(x; b, W Wᵀ + σ² I) exactly; the IWAE estimate must reach it.

    A wrong log q (a missing or wrong log-determinant) would make the estimate converge elsewhere.
    """
    torch.manual_seed(0)
    encoder = LinearEncoder(4, 2)
    model = FlowVAEModel(encoder, nn.Linear(2, 4), posterior=kind, n_flows=2, hidden_sizes=(8,),
                         likelihood=GaussianLikelihood(sigma=0.8), data_shape=(4,))  # fmt: skip
    decoder = model.decoder
    assert isinstance(decoder, nn.Linear)
    w, b = decoder.weight.detach(), decoder.bias.detach()
    cov_post = torch.linalg.inv(torch.eye(2) + w.T @ w / 0.64)  # the exact posterior's covariance
    gain = cov_post @ w.T / 0.64
    with torch.no_grad():
        # The base: the exact posterior mean and twice its marginal standard deviations (so q covers p(z|x)) ...
        encoder.net.weight.zero_()
        encoder.net.weight[:2] = gain
        encoder.net.bias[:2] = -gain @ b
        encoder.net.bias[2:] = torch.log(torch.diagonal(cov_post)) + math.log(4.0)
        # ... which the flows or the correlations move away from it.
        if kind == "planar":
            for p in model.flows.parameters():
                p.normal_(0.0, 0.7)
        if kind == "full_covariance":
            model.lower_head.bias.fill_(0.6)  # type: ignore[union-attr]
    x = torch.randn(4, 4)
    w64 = w.double()
    exact = MultivariateNormal(b.double(), w64 @ w64.T + 0.64 * torch.eye(4, dtype=torch.float64)).log_prob(x.double())
    with torch.no_grad():
        elbo = model.log_weights(x, 4000).double().mean(0)
    estimate = -iw_nll(model, x, n_samples=20_000, chunk_size=40_000).double()
    assert (exact - elbo).mean() > 0.05  # q is not the posterior: a visible gap for the IWAE bound to close
    torch.testing.assert_close(estimate, exact, rtol=0.0, atol=0.05)


def test_iwae_is_above_the_elbo_and_non_decreasing_in_k() -> None:
    torch.manual_seed(0)
    model = _mlp_model("iaf")
    x = torch.rand(8, 1, 4, 4).round().repeat(100, 1, 1, 1)  # each example 100 times: averages over seeds
    with torch.no_grad():
        inference, generative = model(x, n_samples=1)
        terms = elbo_groups(x, inference.posteriors, inference.z, generative.params, model.likelihood,
                            generative.priors)  # fmt: skip
        bounds = {k: -iw_nll(model, x, n_samples=k) for k in (1, 4, 16, 64)}  # per example, independent draws
    assert terms.elbo is not None
    assert abs(bounds[1].mean().item() - terms.elbo.item()) < 0.1  # k = 1 is the ELBO (up to sampling)
    ks = list(bounds)
    for k, later in zip(ks, ks[1:]):
        gain = bounds[later] - bounds[k]  # paired by example
        standard_error = gain.std() / math.sqrt(gain.numel())
        assert gain.mean() > 2 * standard_error, (k, later, gain.mean().item(), standard_error.item())


class _Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, *args: Any) -> None:
        self.losses.append(float(outputs["loss"]))


def _fit(vae: VAE, x: Tensor, steps: int, path: Path | None = None) -> list[float]:
    losses = _Losses()
    trainer = Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, accelerator="cpu", callbacks=[losses], num_sanity_val_steps=0,
                      limit_val_batches=0)  # fmt: skip
    trainer.fit(vae, TensorDataModule(x, batch_size=16, val_fraction=0.25))
    if path is not None:
        trainer.save_checkpoint(path)
    return losses.losses


@pytest.mark.parametrize("kind", ["iaf", "planar", "full_covariance"])
def test_trains_under_vae_and_reloads_from_its_checkpoint_alone(kind: PosteriorKind, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = VAE(model=_mlp_model(kind))
    x = (torch.rand(1, 1, 4, 4) < 0.3).float().repeat(64, 1, 1, 1)  # one binary pattern: learnable in few steps
    losses = _fit(vae, x, 40, tmp_path / "flow.ckpt")
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    loaded = VAE.load_from_checkpoint(tmp_path / "flow.ckpt")
    assert isinstance(loaded.model, FlowVAEModel) and loaded.model.posterior_kind == kind
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    vae.eval()
    loaded.eval()
    torch.testing.assert_close(loaded.reconstruct(x[:3]), vae.reconstruct(x[:3]))
    assert loaded.sample(2).shape == (2, 1, 4, 4)


def test_a_model_of_undescribed_parts_reloads_when_passed_again(tmp_path: Path) -> None:
    torch.manual_seed(0)

    def make() -> FlowVAEModel:
        return FlowVAEModel(LinearEncoder(16, 3, context_dim=4), MLPDecoder(3, (1, 4, 4), hidden_sizes=(8,)),
                            posterior="iaf", context_dim=4, hidden_sizes=(8,), data_shape=(1, 4, 4))  # fmt: skip

    model = make()
    assert dict(model.hparams) == {}  # the encoder records no arguments: neither does the model
    vae = VAE(model=model)
    _fit(vae, torch.rand(32, 1, 4, 4).round(), 3, tmp_path / "custom.ckpt")
    with pytest.raises(ValueError, match=r"pass model=FlowVAEModel\(\.\.\.\) to VAE.load_from_checkpoint"):
        VAE.load_from_checkpoint(tmp_path / "custom.ckpt")
    loaded = VAE.load_from_checkpoint(tmp_path / "custom.ckpt", model=make())
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_wrong_arguments_are_refused() -> None:
    enc, dec = MLPEncoder((1, 4, 4), latent_dim=3), MLPDecoder(3, (1, 4, 4))
    with pytest.raises(ValueError, match="needs an `encoder` and a `decoder`"):
        FlowVAEModel(enc)
    with pytest.raises(ValueError, match="`posterior` to be one of"):
        FlowVAEModel(enc, dec, posterior="maf")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`posterior`"):
        FlowVAEModel(enc, dec, posterior=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`n_flows` to be an int"):
        FlowVAEModel(enc, dec, n_flows=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`n_flows` to be an int >= 0"):
        FlowVAEModel(enc, dec, n_flows=-1)
    with pytest.raises(ValueError, match="`context_dim` to be 0 for posterior='planar'"):
        FlowVAEModel(enc, dec, posterior="planar", context_dim=2)
    with pytest.raises(ValueError, match="VampPrior"):
        FlowVAEModel(enc, dec, prior="vamp")
    with pytest.raises(ValueError, match="latent size"):
        FlowVAEModel(nn.Linear(6, 4), nn.Linear(2, 6))
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="with h of size context_dim=2"):
        FlowVAEModel(enc, dec, context_dim=2).inference(x)
    with pytest.raises(ValueError, match="pass context_dim="):
        FlowVAEModel(LinearEncoder(16, 3, context_dim=2), dec).inference(x)
    with pytest.raises(ValueError, match=r"context h of shape \(2, 3\)"):
        FlowVAEModel(LinearEncoder(16, 3, context_dim=2), dec, context_dim=3).inference(x)
    with pytest.raises(TypeError, match="Expected the encoder to return"):
        FlowVAEModel(nn.Flatten(), dec, latent_dim=3).inference(x)
    with pytest.raises(ValueError, match=r"`loc` of shape \(B, 4\)"):
        FlowVAEModel(enc, MLPDecoder(4, (1, 4, 4)), latent_dim=4).inference(x)


def test_a_checkpoint_naming_a_hostile_class_inside_the_model_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "flow.ckpt"
    _fit(VAE(model=_mlp_model("iaf")), torch.rand(32, 1, 4, 4).round(), 1, path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["init_args"]["posterior"] == "iaf"
    checkpoint["hyper_parameters"]["model"]["init_args"]["encoder"]["class_path"] = "os.system"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"model\.init_args\.encoder.*'os\.system'.*refused"):
        VAE.load_from_checkpoint(path)
