"""gaussian_kl (functional/kl.py) against torch.distributions."""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from lightning_vae.functional import gaussian_kl


def _normal(loc: torch.Tensor, log_var: torch.Tensor) -> Normal:
    return Normal(loc, torch.exp(0.5 * log_var))


def test_gaussian_kl_matches_torch() -> None:
    mq, lq, mp, lp = torch.randn(4, 16, 6).unbind(0)
    torch.testing.assert_close(gaussian_kl(mq, lq, mp, lp), kl_divergence(_normal(mq, lq), _normal(mp, lp)))
    zeros = torch.zeros_like(mq)
    torch.testing.assert_close(gaussian_kl(mq, lq), kl_divergence(_normal(mq, lq), _normal(zeros, zeros)))
