"""PriorSampleLogger draws from its own generator: the same seed gives the same samples, the global state is
untouched."""

from __future__ import annotations

import torch
from support.images import small_vae

from lightning_vae import VAE
from lightning_vae.callbacks import PriorSampleLogger
from lightning_vae.models import StackedVAEModel


def test_prior_samples_leave_the_global_random_state_alone() -> None:
    model = small_vae().eval()
    state = torch.random.get_rng_state()
    first = PriorSampleLogger(n_images=6, seed=11).samples(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(PriorSampleLogger(n_images=6, seed=11).samples(model), first, rtol=0, atol=0)
    assert not torch.equal(PriorSampleLogger(n_images=6, seed=12).samples(model), first)


def test_prior_samples_of_a_stacked_model_come_from_its_ancestral_sampler() -> None:
    torch.manual_seed(0)
    vae = VAE(model=StackedVAEModel((1, 4, 4), latent_sizes=(4, 2), hidden_sizes=((8,), (8,)))).eval()
    samples = PriorSampleLogger(n_images=5, seed=3).samples(vae)
    torch.manual_seed(3)
    with torch.no_grad():
        z = vae.model.prior_sample(5)  # z2 ~ p(z2), then z1 ~ p(z1 | z2)
        expected = torch.sigmoid(vae.model.decoder(z["z1"][0])).view(5, 1, 4, 4)
    torch.testing.assert_close(samples, expected, rtol=0, atol=0)
    assert not torch.equal(PriorSampleLogger(n_images=5, seed=4).samples(vae), samples)
