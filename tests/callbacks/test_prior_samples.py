"""PriorSampleLogger draws from its own generator: the same seed gives the same samples, the global state is
untouched."""

from __future__ import annotations

import torch
from support.images import small_vae

from lightning_vae.callbacks import PriorSampleLogger


def test_prior_samples_leave_the_global_random_state_alone() -> None:
    model = small_vae().eval()
    state = torch.random.get_rng_state()
    first = PriorSampleLogger(n_images=6, seed=11).samples(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(PriorSampleLogger(n_images=6, seed=11).samples(model), first, rtol=0, atol=0)
    assert not torch.equal(PriorSampleLogger(n_images=6, seed=12).samples(model), first)
