"""The latent regularisers (functional/regularizers.py) against the papers' code re-implemented: 1Konny/FactorVAE
(``ops.py``, ``solver.py``), disentanglement_lib (``vae.py``: FactorVAE, DIP-VAE) and tolstikhin/wae
(``mmd_penalty``), and InfoVAE (``compute_kernel``), in NumPy float64 where the code is not about random draws."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax
from support.papers import dip_reference, wae_mmd_penalty

from lightning_vae.functional.regularizers import (
    WAE_SCALES,
    density_ratio_tc,
    dip_covariance,
    dip_regularizer,
    discriminator_loss,
    mmd,
    permute_dims,
)


# ------------------------------------------------------------------ FactorVAE
def _permute_dims_1konny(z):
    """``ops.permute_dims`` of 1Konny/FactorVAE."""
    assert z.dim() == 2
    B, _ = z.size()
    perm_z = []
    for z_j in z.split(1, 1):
        perm = torch.randperm(B).to(z.device)
        perm_z.append(z_j[perm])
    return torch.cat(perm_z, 1)


def test_permute_dims_draws_what_1konny_draws():
    z = torch.randn(17, 5)
    torch.manual_seed(3)
    expected = _permute_dims_1konny(z)
    torch.manual_seed(3)
    torch.testing.assert_close(permute_dims(z), expected, rtol=0, atol=0)
    torch.testing.assert_close(
        permute_dims(z, torch.Generator().manual_seed(4)), permute_dims(z, torch.Generator().manual_seed(4))
    )
    for j in range(5):  # every column a permutation of itself, the columns shuffled independently
        assert sorted(permute_dims(z)[:, j].tolist()) == sorted(z[:, j].tolist())
    with pytest.raises(ValueError, match=r"Expected `z` of shape \(B, D\)"):
        permute_dims(torch.zeros(3))


def test_density_ratio_tc_and_discriminator_loss_equal_1konny_and_disentanglement_lib():
    g = torch.Generator().manual_seed(0)
    d_z, d_perm = torch.randn(32, 2, generator=g).double(), torch.randn(32, 2, generator=g).double()
    # 1Konny/FactorVAE solver.py
    vae_tc_loss = (d_z[:, :1] - d_z[:, 1:]).mean()
    zeros, ones = torch.zeros(32, dtype=torch.long), torch.ones(32, dtype=torch.long)
    d_tc_loss = 0.5 * (F.cross_entropy(d_z, zeros) + F.cross_entropy(d_perm, ones))
    assert density_ratio_tc(d_z).mean().item() == pytest.approx(vae_tc_loss.item(), rel=1e-14)
    assert discriminator_loss(d_z, d_perm).item() == pytest.approx(d_tc_loss.item(), rel=1e-14)
    # disentanglement_lib: tc_loss = mean(logits[:, 0] - logits[:, 1]); it maximises
    # discr_loss = 0.5 mean log probs_z[:, 0] + 0.5 mean log probs_z_shuffle[:, 1]
    lz, lp = d_z.numpy(), d_perm.numpy()
    discr = 0.5 * log_softmax(lz, axis=1)[:, 0].mean() + 0.5 * log_softmax(lp, axis=1)[:, 1].mean()
    assert discriminator_loss(d_z, d_perm).item() == pytest.approx(-discr, rel=1e-12)
    np.testing.assert_allclose(density_ratio_tc(d_z).numpy(), lz[:, 0] - lz[:, 1], rtol=1e-14)
    with pytest.raises(ValueError, match=r"of shape \(B, 2\)"):
        density_ratio_tc(torch.zeros(4, 1))


# ------------------------------------------------------------------ DIP-VAE
@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_dip_regularizers_equal_disentanglement_lib(dip_type):
    rng = np.random.default_rng(1)
    z_mean = rng.normal(size=(64, 4)) @ rng.normal(size=(4, 4))
    z_logvar = rng.normal(size=(64, 4)) * 0.3 - 1.0
    lambda_od, lambda_d = 10.0, 100.0  # DIP-VAE I: lambda_d = 10 lambda_od (Kumar et al.)
    cov_ref, reg_ref = dip_reference(z_mean, z_logvar, lambda_od, lambda_d, dip_type)
    cov = dip_covariance(torch.from_numpy(z_mean), torch.from_numpy(z_logvar), dip_type)
    np.testing.assert_allclose(cov.numpy(), cov_ref, rtol=1e-12, atol=1e-14)
    assert dip_regularizer(cov, lambda_od, lambda_d).item() == pytest.approx(reg_ref, rel=1e-12)
    if dip_type == "i":
        np.testing.assert_allclose(cov.numpy(), np.cov(z_mean.T, bias=True), rtol=1e-10, atol=1e-12)


def test_dip_arguments_are_checked():
    with pytest.raises(ValueError, match="for DIP-VAE II"):
        dip_covariance(torch.zeros(4, 2), None, "ii")
    with pytest.raises(ValueError, match="Expected `dip_type` to be one of"):
        dip_covariance(torch.zeros(4, 2), None, "iii")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `lambda_od` to be a finite float >= 0"):
        dip_regularizer(torch.eye(2), -1.0, 1.0)
    with pytest.raises(ValueError, match="square"):
        dip_regularizer(torch.zeros(2, 3), 1.0, 1.0)


# ------------------------------------------------------------------ MMD
def test_mmd_equals_wae_mmd_penalty():
    rng = np.random.default_rng(2)
    qz, pz = rng.normal(size=(50, 8)) * 1.3 + 0.2, rng.normal(size=(50, 8))
    t = torch.from_numpy
    imq = mmd(t(qz), t(pz), "imq", scales=WAE_SCALES)
    assert imq.item() == pytest.approx(wae_mmd_penalty(qz, pz, "IMQ", zdim=8), rel=1e-10)
    rbf = mmd(t(qz), t(pz), "rbf", bandwidth=2 * 3.7)
    assert rbf.item() == pytest.approx(wae_mmd_penalty(qz, pz, "RBF", zdim=8, sigma2_k=3.7), rel=1e-10)


def _infovae_kernel(x, y):
    """InfoVAE's ``compute_kernel``: exp(-mean over dimensions of the squared difference / dim)."""
    dim = x.shape[1]
    return np.exp(-np.mean((x[:, None, :] - y[None, :, :]) ** 2, axis=2) / dim)


def test_mmd_rbf_is_infovae_s_kernel_without_the_diagonals():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 6)) + 0.3, rng.normal(size=(30, 6))
    kxx, kyy, kxy = _infovae_kernel(x, x), _infovae_kernel(y, y), _infovae_kernel(x, y)
    biased = kxx.mean() + kyy.mean() - 2 * kxy.mean()  # InfoVAE's compute_mmd
    unbiased = (kxx.sum() - 40) / (40 * 39) + (kyy.sum() - 30) / (30 * 29) - 2 * kxy.mean()  # k(a, a) = 1 removed
    got = mmd(torch.from_numpy(x), torch.from_numpy(y), "rbf", bandwidth=6.0**2)
    assert got.item() == pytest.approx(unbiased, rel=1e-12)
    assert got.item() != pytest.approx(biased, rel=1e-3)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_is_the_unbiased_statistic_for_unequal_sizes(kernel):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(11, 3)) + 0.5
    c = 2.0 * 3 * 0.5

    def k(a, b):
        d2 = float(np.sum((a - b) ** 2))
        return np.exp(-d2 / c) if kernel == "rbf" else c / (c + d2)

    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(7), 2)) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(11), 2)) / (11 * 10)
    xy = sum(k(a, b) for a in x for b in y) / (7 * 11)
    got = mmd(torch.from_numpy(x), torch.from_numpy(y), kernel, scales=(0.5,))
    assert got.item() == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_mmd_is_differentiable_and_checks_its_arguments():
    x = torch.randn(16, 2, requires_grad=True)
    mmd(x, torch.randn(16, 2)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="n, m >= 2 and the same D"):
        mmd(torch.zeros(1, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="Expected `kernel` to be one of"):
        mmd(torch.zeros(3, 2), torch.zeros(4, 2), "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `bandwidth` to be a finite float > 0"):
        mmd(torch.zeros(3, 2), torch.zeros(4, 2), bandwidth=0.0)
