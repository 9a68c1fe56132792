"""What the image views draw (callbacks/views.py), as functions of a module: prior samples from a fixed seed,
reconstruction rows, latent groups and their posterior means, and latent traversals (one group, or a chosen group of
a stacked model with the groups below from their conditional prior means), against references written by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.images import stacked_vae

from lightning_vae import VAE
from lightning_vae.callbacks.views import (
    group_means,
    latent_groups,
    latent_traversal,
    prior_samples,
    reconstruction_rows,
)
from lightning_vae.nets import MLPDecoder, MLPEncoder


def _vae() -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder((1, 4, 4), 3, hidden_sizes=(16,)), MLPDecoder(3, (1, 4, 4), hidden_sizes=(16,))).eval()


def test_prior_samples_come_from_the_seed_and_leave_the_global_state_alone() -> None:
    vae = _vae()
    state = torch.random.get_rng_state()
    got = prior_samples(vae, 5, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(7)
    with torch.no_grad():
        expected = vae.sample(5)  # the same draw with the global generator seeded by hand
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert got.dtype == torch.float32 and got.shape == (5, 1, 4, 4)
    assert not torch.equal(prior_samples(vae, 5, seed=8), got)
    with pytest.raises(ValueError, match=r"Expected `n` to be an int >= 1, got 0"):
        prior_samples(vae, 0)
    with pytest.raises(TypeError, match=r"Expected `seed` to be an int, got 1.5 \(float\)"):
        prior_samples(vae, 2, seed=1.5)  # type: ignore[arg-type]


def test_reconstruction_rows_put_each_row_of_inputs_over_its_reconstructions() -> None:
    vae = _vae()
    x = torch.rand(5, 1, 4, 4).round()
    with torch.no_grad():
        recon = vae.reconstruct(x)
    rows = reconstruction_rows(vae, x, nrow=3, fill=0.5)
    blank = torch.full((1, 1, 4, 4), 0.5)
    expected = torch.cat([x[:3], recon[:3], x[3:], blank, recon[3:], blank])  # a short last row filled
    torch.testing.assert_close(rows, expected, rtol=0, atol=0)
    torch.testing.assert_close(reconstruction_rows(vae, x, nrow=5), torch.cat([x, recon]), rtol=0, atol=0)


def test_latent_groups_and_their_posterior_means() -> None:
    vae, stacked = _vae(), stacked_vae()
    assert latent_groups(vae) == ("z",) and latent_groups(stacked) == ("z2", "z1")
    assert latent_groups(object()) == ()
    x = torch.rand(6, 1, 4, 4).round()
    with torch.no_grad():
        torch.testing.assert_close(group_means(vae, x, "z"), vae.encode(x).mean, rtol=0, atol=0)
        z1 = group_means(stacked, x, "z1")
        torch.testing.assert_close(z1, stacked.model.bottom_up[0](x.flatten(1))[0], rtol=1e-6, atol=1e-6)
    assert group_means(stacked, x, "z2").shape == (6, 2)
    with pytest.raises(ValueError, match=r"`group` to be one of the latent groups \('z2', 'z1'\), got 'z3'"):
        group_means(stacked, x, "z3")


def test_a_single_group_traversal_sweeps_the_most_active_dimensions_from_the_first_example() -> None:
    vae = _vae()
    x = torch.rand(32, 1, 4, 4).round()
    images, dims, activity = latent_traversal(vae, x, n_dims=2, n_steps=4, limit=1.5)
    with torch.no_grad():
        means = vae.encode(x).mean.double().numpy()
    variance = means.var(axis=0, ddof=1)  # Var_x E_q[z_d], the activity (NumPy)
    np.testing.assert_allclose(activity.numpy(), variance, rtol=1e-4)
    assert dims.tolist() == list(np.argsort(-variance, kind="stable")[:2])
    z = np.repeat(means[:1], 8, axis=0).reshape(2, 4, 3)
    for row, d in enumerate(dims.tolist()):
        z[row, :, d] = np.linspace(-1.5, 1.5, 4)
    with torch.no_grad():
        expected = torch.sigmoid(vae.decode(torch.from_numpy(z.reshape(8, 3)).float()))
    assert images.shape == (8, 1, 4, 4)
    torch.testing.assert_close(images, expected, rtol=1e-5, atol=1e-6)
    assert latent_traversal(vae, x, n_dims=10)[1].shape == (3,)  # at most the latent size


def test_a_module_without_a_likelihood_shows_the_decoder_output() -> None:
    vae = _vae()

    class Bare:
        encode, decode = vae.encode, vae.decode

    x = torch.rand(8, 1, 4, 4).round()
    images, _, _ = latent_traversal(Bare(), x, n_dims=1, n_steps=3)
    with_likelihood, _, _ = latent_traversal(vae, x, n_dims=1, n_steps=3)
    torch.testing.assert_close(torch.sigmoid(images), with_likelihood, rtol=1e-6, atol=1e-6)


def test_a_chosen_group_of_a_stacked_model_is_traversed_with_the_groups_below_from_their_prior_means() -> None:
    vae, x = stacked_vae(), torch.rand(16, 1, 4, 4).round()
    model = vae.model
    for group in ("z2", "z1"):
        torch.manual_seed(1)
        images, dims, activity = latent_traversal(vae, x, n_dims=2, n_steps=5, limit=2.0, group=group)
        torch.manual_seed(1)  # the same sample of z1, on which z2's posterior is conditioned
        with torch.no_grad():
            z1_sample = model.inference(x, 1).z["z1"][0]
            means = {"z1": model.bottom_up[0](x.flatten(1))[0], "z2": model.bottom_up[1](z1_sample)[0]}
        np.testing.assert_allclose(activity.numpy(), means[group].double().numpy().var(axis=0, ddof=1), rtol=1e-4)
        z = means[group][0].repeat(10, 1)
        for row, d in enumerate(dims.tolist()):
            z[row * 5 : row * 5 + 5, d] = torch.linspace(-2.0, 2.0, 5)
        with torch.no_grad():
            # By hand: z1 is the traversed values, or for a traversal of z2 the mean of p(z1 | z2); then p(x | z1).
            z1 = z if group == "z1" else model.top_down[0](z)[0]
            expected = torch.sigmoid(model.decoder(z1)).view(10, 1, 4, 4)
        torch.testing.assert_close(images, expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(images[0], images[4], atol=1e-3)  # the two ends of a row differ
