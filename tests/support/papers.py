"""The papers' own code re-implemented in NumPy float64, shared by the tests of the functions and of the objectives:
``lib/dist.py`` and ``vae_quant.py`` of rtqichen/beta-tcvae (Chen et al. 2018), ``DIPVAE`` of
google-research/disentanglement_lib (Kumar et al. 2018) and ``mmd_penalty`` of tolstikhin/wae (Tolstikhin et al.
2018)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp


def normal_log_density(sample, mu, logsigma):
    """``lib/dist.py`` ``Normal.log_density`` (parameters are mean and log standard deviation)."""
    tmp = (sample - mu) * np.exp(-logsigma)
    return -0.5 * (tmp * tmp + 2 * logsigma + np.log(2 * np.pi))


def vae_quant_matrix(batch_size, dataset_size, as_in_the_paper):
    """``VAE._log_importance_weight_matrix``; ``as_in_the_paper`` makes its two edits: the stride of the diagonal
    (``M + 2``, not ``M + 1``) and the last row's stratum entry (``W[M, 0]``, not ``W[M - 1, 0]``)."""
    n, m = dataset_size, batch_size - 1
    strat_weight = (n - m) / (n * m)
    w = np.full((batch_size, batch_size), 1 / m)
    flat = w.reshape(-1)
    stride = m + 2 if as_in_the_paper else m + 1
    flat[::stride] = 1 / n
    flat[1::stride] = strat_weight
    w[m if as_in_the_paper else m - 1, 0] = strat_weight
    return np.log(w)


def vae_quant_terms(zs, mu, logsigma, dataset_size, mss, as_in_the_paper=True):
    """``VAE.elbo``'s log q(z|x), log q(z), log prod_j q(z_j) and log p(z) per example (``zs`` (B, K))."""
    batch_size = zs.shape[0]
    logpz = normal_log_density(zs, 0.0, 0.0).sum(1)
    logqz_condx = normal_log_density(zs, mu, logsigma).sum(1)
    _logqz = normal_log_density(zs[:, None, :], mu[None], logsigma[None])  # (B, B, K)
    if not mss:
        logqz_prodmarginals = (logsumexp(_logqz, axis=1) - math.log(batch_size * dataset_size)).sum(1)
        logqz = logsumexp(_logqz.sum(2), axis=1) - math.log(batch_size * dataset_size)
    else:
        logiw_matrix = vae_quant_matrix(batch_size, dataset_size, as_in_the_paper)
        logqz = logsumexp(logiw_matrix + _logqz.sum(2), axis=1)
        logqz_prodmarginals = logsumexp(logiw_matrix[:, :, None] + _logqz, axis=1).sum(1)
    return logqz_condx, logqz, logqz_prodmarginals, logpz


def dip_reference(z_mean, z_logvar, lambda_od, lambda_d, dip_type):
    """disentanglement_lib ``compute_covariance_z_mean``, ``regularize_diag_off_diag_dip``, ``DIPVAE.regularizer``."""
    expectation_z_mean_z_mean_t = np.mean(z_mean[:, :, None] * z_mean[:, None, :], axis=0)
    expectation_z_mean = np.mean(z_mean, axis=0)
    cov_z_mean = expectation_z_mean_z_mean_t - expectation_z_mean[:, None] * expectation_z_mean[None, :]
    if dip_type == "i":
        cov = cov_z_mean
    else:
        cov_enc = np.stack([np.diag(v) for v in np.exp(z_logvar)])
        cov = cov_enc.mean(0) + cov_z_mean
    diag = np.diag(cov)
    off = cov - np.diag(diag)
    return cov, lambda_od * np.sum(off**2) + lambda_d * np.sum((diag - 1) ** 2)


def wae_mmd_penalty(sample_qz, sample_pz, kernel, zdim, sigma2_p=1.0, sigma2_k=None):
    """``WAE.mmd_penalty`` of tolstikhin/wae (equal batch sizes), in NumPy; ``sigma2_k`` replaces the RBF branch's
    median heuristic."""
    n = sample_qz.shape[0]
    nf = float(n)
    norms_pz = np.sum(sample_pz**2, axis=1, keepdims=True)
    distances_pz = norms_pz + norms_pz.T - 2.0 * sample_pz @ sample_pz.T
    norms_qz = np.sum(sample_qz**2, axis=1, keepdims=True)
    distances_qz = norms_qz + norms_qz.T - 2.0 * sample_qz @ sample_qz.T
    distances = norms_qz + norms_pz.T - 2.0 * sample_qz @ sample_pz.T
    if kernel == "RBF":
        res1 = np.exp(-distances_qz / 2.0 / sigma2_k) + np.exp(-distances_pz / 2.0 / sigma2_k)
        res1 = np.sum(res1 * (1.0 - np.eye(n))) / (nf * nf - nf)
        res2 = np.sum(np.exp(-distances / 2.0 / sigma2_k)) * 2.0 / (nf * nf)
        return res1 - res2
    cbase = 2.0 * zdim * sigma2_p
    stat = 0.0
    for scale in [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]:
        c = cbase * scale
        res1 = c / (c + distances_qz) + c / (c + distances_pz)
        res1 = np.sum(res1 * (1.0 - np.eye(n))) / (nf * nf - nf)
        res2 = np.sum(c / (c + distances)) * 2.0 / (nf * nf)
        stat += res1 - res2
    return stat


def vae_quant_modified_elbo(logpx, zs, mu, logsigma, dataset_size, mss, beta, lamb, include_mutinfo=True):
    """``VAE.elbo`` of ``vae_quant.py`` with ``tcvae=True``: the per-example ``modified_elbo`` (higher is better);
    the loss is minus its mean. ``as_in_the_paper`` MSS weights (see :func:`vae_quant_matrix`)."""
    logqz_condx, logqz, logqz_prodmarginals, logpz = vae_quant_terms(zs, mu, logsigma, dataset_size, mss)
    if include_mutinfo:
        return (
            logpx
            - (logqz_condx - logqz)
            - beta * (logqz - logqz_prodmarginals)
            - (1 - lamb) * (logqz_prodmarginals - logpz)
        )
    return logpx - beta * (logqz - logqz_prodmarginals) - (1 - lamb) * (logqz_prodmarginals - logpz)
