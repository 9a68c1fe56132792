"""The exported graphs (export/graphs.py): the encoder graph gives q(z|x)'s parameters as VAE.encode does, the decoder
graph the likelihood's mean, the sampler graph maps standard normal noise through the prior (the mixture component
picked by the inverse of the cumulative weights, against NumPy), and what the sampler cannot map is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.export import LATENT, onnx_run
from support.modules import PlainDecoder
from torch import nn
from torch.distributions import Categorical, Independent, Laplace, MixtureSameFamily, Normal

from lightning_vae import VAE
from lightning_vae.distributions import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    DiagonalGaussian,
    GaussianLikelihood,
    LearnableGaussianPrior,
)
from lightning_vae.distributions.posteriors import LOG_VAR_RANGE
from lightning_vae.export import DecoderGraph, EncoderGraph, ExportError, SamplerGraph, export_model


class _TupleEncoder(nn.Module):
    """Returns fixed ``(loc, log_var)`` rows, whatever the input."""

    def __init__(self, loc: torch.Tensor, log_var: torch.Tensor) -> None:
        super().__init__()
        self.loc, self.log_var = loc, log_var

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        return self.loc.expand(n, -1), self.log_var.expand(n, -1)


def test_the_encoder_graph_soft_clamps_the_log_variance_as_the_posterior_does() -> None:
    loc = torch.tensor([[0.5, -2.0, 3.0, 0.0]], dtype=torch.float64)
    log_var = torch.tensor([[0.0, 100.0, -100.0, -3.0]], dtype=torch.float64)
    got_loc, got_log_var = EncoderGraph(_TupleEncoder(loc, log_var))(torch.zeros(3, 1))
    assert got_loc.dtype == got_log_var.dtype == torch.float32 and got_loc.shape == (3, 4)
    reference = DiagonalGaussian(loc.float(), log_var.float())  # what VAE.encode gives
    torch.testing.assert_close(got_loc, reference.loc.expand(3, -1), rtol=0, atol=0)
    torch.testing.assert_close(got_log_var, reference.log_var.expand(3, -1), rtol=0, atol=0)
    low, high = LOG_VAR_RANGE
    assert bool(((got_log_var >= low) & (got_log_var <= high)).all())
    # inside the range the clamp is the identity; far outside it saturates at the bounds
    torch.testing.assert_close(got_log_var[0, [0, 3]], torch.tensor([0.0, -3.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(got_log_var[0, [1, 2]], torch.tensor([high, low]), rtol=0, atol=1e-4)


def test_the_encoder_graph_of_a_distribution_gives_its_mean_and_log_variance() -> None:
    class Encoder(nn.Module):
        def forward(self, x: torch.Tensor) -> Independent:
            return Independent(Normal(x[:, :2], x[:, 2:].exp()), 1)  # scale e^s: log variance 2 s

    x = torch.tensor([[0.3, -1.0, 0.5, -2.0], [2.0, 0.0, 0.0, 1.0]])
    loc, log_var = EncoderGraph(Encoder())(x)
    torch.testing.assert_close(loc, x[:, :2])
    torch.testing.assert_close(log_var, 2 * x[:, 2:])


def test_an_encoder_returning_a_distribution_exports_its_mean_and_log_variance(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")

    class DistributionEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(64, 2 * LATENT)

        def forward(self, x: torch.Tensor) -> Independent:
            loc, raw = self.net(x.flatten(1)).chunk(2, -1)
            return Independent(Normal(loc, nn.functional.softplus(raw) + 1e-3), 1)

    vae = VAE(DistributionEncoder(), PlainDecoder(LATENT), data_shape=(1, 8, 8)).eval()
    written = export_model(vae, tmp_path, "onnx", parts=["encoder"])
    x = torch.rand(3, 1, 8, 8)
    loc, log_var = onnx_run(written["encoder"], x=x)
    with torch.no_grad():
        q = vae.encode(x)
    np.testing.assert_allclose(loc, q.mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(log_var, q.variance.log().numpy(), atol=1e-5)


def test_the_decoder_graph_gives_the_likelihoods_mean() -> None:
    torch.manual_seed(0)
    z = torch.randn(5, 3)
    decoder = PlainDecoder(3, (1, 2, 2))
    with torch.no_grad():
        logits = decoder(z).double().numpy()
        got = DecoderGraph(decoder, BernoulliLikelihood())(z)
        np.testing.assert_allclose(got.numpy(), 1 / (1 + np.exp(-logits)), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(DecoderGraph(decoder, GaussianLikelihood())(z), decoder(z))
        # the categorical mean: sum over the 256 levels of (level / 255) * softmax(logits)
        categorical = PlainDecoder(3, (256, 1, 2, 2))
        logits = categorical(z).double().numpy()
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        expected = (probs * (np.arange(256) / 255).reshape(1, 256, 1, 1, 1)).sum(1)
        got = DecoderGraph(categorical, CategoricalLikelihood())(z)
    assert got.shape == (5, 1, 2, 2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


class _Identity(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z


def _latent_of(prior: torch.distributions.Distribution, noise: torch.Tensor, uniform=None) -> torch.Tensor:
    sampler = SamplerGraph(DecoderGraph(_Identity(), GaussianLikelihood()), prior)
    return sampler(noise) if uniform is None else sampler(noise, uniform)


def test_the_sampler_maps_noise_through_a_diagonal_gaussian_prior() -> None:
    loc, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 2.0, 1.0])
    noise = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    expected = loc.double().numpy() + scale.double().numpy() * noise.double().numpy()
    for prior in (Independent(Normal(loc, scale), 1), DiagonalGaussian(loc, 2 * scale.log())):
        sampler = SamplerGraph(DecoderGraph(_Identity(), GaussianLikelihood()), prior)
        assert not sampler.mixture
        np.testing.assert_allclose(sampler(noise).numpy(), expected, rtol=1e-6, atol=1e-6)
    standard = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    torch.testing.assert_close(_latent_of(standard, noise), noise, rtol=0, atol=0)


def test_the_sampler_picks_mixture_components_by_the_inverse_of_the_cumulative_weights() -> None:
    weights = np.array([0.2, 0.5, 0.3])
    locs = torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]])
    scales = torch.tensor([[1.0, 2.0], [0.5, 0.5], [3.0, 1.0]])
    prior = MixtureSameFamily(
        Categorical(probs=torch.tensor(weights, dtype=torch.float32)), Independent(Normal(locs, scales), 1)
    )
    g = torch.Generator().manual_seed(0)
    uniform, noise = torch.rand(2000, generator=g), torch.randn(2000, 2, generator=g)
    component = np.searchsorted(np.cumsum(weights), uniform.double().numpy(), side="right")
    expected = locs.numpy()[component] + scales.numpy()[component] * noise.numpy()
    np.testing.assert_allclose(_latent_of(prior, noise, uniform).numpy(), expected, rtol=1e-6, atol=1e-6)
    # each component drawn about as often as its weight
    np.testing.assert_allclose(np.bincount(component, minlength=3) / 2000, weights, atol=0.04)
    # the ends of [0, 1) fall in the first and the last component
    ends = _latent_of(prior, torch.zeros(2, 2), torch.tensor([0.0, 1.0 - 1e-7]))
    torch.testing.assert_close(ends, locs[[0, 2]], rtol=0, atol=0)


def test_a_mixture_sampler_needs_uniform_and_holds_the_prior_as_constants() -> None:
    prior = LearnableGaussianPrior(3)
    with torch.no_grad():
        prior.loc.fill_(1.0)
    sampler = SamplerGraph(DecoderGraph(_Identity(), GaussianLikelihood()), prior())
    noise = torch.randn(4, 3)
    before = sampler(noise)
    with torch.no_grad():
        prior.loc.fill_(-5.0)  # the graph read the parameters once, when it was built
    torch.testing.assert_close(sampler(noise), before, rtol=0, atol=0)
    assert {"loc", "scale"} <= set(sampler.state_dict()) and not any(p.requires_grad for p in sampler.buffers())
    mixture = MixtureSameFamily(
        Categorical(logits=torch.zeros(2)), Independent(Normal(torch.zeros(2, 3), torch.ones(2, 3)), 1)
    )
    mixture_sampler = SamplerGraph(DecoderGraph(_Identity(), GaussianLikelihood()), mixture)
    assert mixture_sampler.mixture and mixture_sampler.cdf.shape == (1,)  # K - 1 inner boundaries
    with pytest.raises(ValueError, match=r"needs `uniform` \(B,\) in \[0, 1\)"):
        mixture_sampler(noise)


@pytest.mark.parametrize(
    "prior",
    [
        Independent(Laplace(torch.zeros(3), torch.ones(3)), 1),
        MixtureSameFamily(
            Categorical(logits=torch.zeros(2)), Independent(Laplace(torch.zeros(2, 3), torch.ones(2, 3)), 1)
        ),
        Normal(torch.zeros(3), torch.ones(3)),  # no event dimension: not a distribution over vectors
    ],
    ids=["laplace", "laplace_mixture", "batch_of_scalars"],
)
def test_a_prior_the_sampler_cannot_map_is_refused(prior) -> None:
    with pytest.raises(ExportError, match=f"Cannot export a sampler for the prior {type(prior).__name__}: "):
        SamplerGraph(DecoderGraph(_Identity(), GaussianLikelihood()), prior)
