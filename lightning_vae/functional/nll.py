"""The importance-weighted estimate of log p(x) (Burda et al. 2015), in bounded memory.

The model protocol it needs is :class:`lightning_vae.protocols.SupportsLogJoint` (``VAE`` keeps it; any other
module can): ``encode(x)`` returns ``q(z|x)`` as a distribution with batch shape ``(B,)`` and event shape
``(D,)``, and ``log_joint(x, z)`` returns ``log p(x, z) = log p(x|z) + log p(z)`` in nats, shape ``(S, B)``, for
latents ``z`` of shape ``(S, B, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from lightning_vae.checks import check_int
from lightning_vae.functional.math import at_least_float32
from lightning_vae.protocols import SupportsLogJoint, require

#: Most (sample, example) pairs decoded at once by default, everywhere the estimate is made (``VAE``'s
#: ``iw_chunk_size``, :class:`~lightning_vae.metrics.ImportanceWeightedNLL`, the functions here).
IW_CHUNK_SIZE = 2048


def iw_log_likelihood(
    x: Tensor,
    posterior: Distribution,
    log_joint: Callable[[Tensor, Tensor], Tensor],
    n_samples: int = 5000,
    chunk_size: int = IW_CHUNK_SIZE,
    between_chunks: Callable[[], None] | None = None,
) -> Tensor:
    """``log p(x) ≈ logsumexp_i [log p(x, z_i) − log q(z_i|x)] − log k`` with ``z_i ~ q(z|x)``, per example.

    The estimate is a stochastic lower bound whose expectation does not decrease with ``k`` and tends
    to ``log p(x)`` (Burda et al. 2015); ``k = 1`` gives the ELBO in expectation. Samples are drawn
    and decoded in chunks of at most ``chunk_size`` (sample, example) pairs, and the log-sum-exp is
    accumulated across chunks, so memory does not grow with ``k``.

    Args:
        x: Data ``(B, *data_shape)``.
        posterior: ``q(z|x)`` with batch shape ``(B,)`` and event shape ``(D,)``.
        log_joint: ``(x, z) -> log p(x, z)`` for ``z`` of shape ``(S, B, D)``, returning ``(S, B)``.
        n_samples: Importance samples ``k`` per example.
        chunk_size: Most (sample, example) pairs decoded at once; at least one sample of the whole batch.
        between_chunks: Called before each chunk after the first, e.g. to stop a long estimate when the process
            is asked to terminate (it may raise).

    Returns:
        The estimate of ``log p(x)`` of each example in nats, shape ``(B,)``, float32 (float64 for a float64 model).

    Example::

        >>> import torch
        >>> from torch.distributions import Independent, Normal
        >>> q = Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1)
        >>> iw_log_likelihood(torch.zeros(3, 1), q, lambda x, z: q.log_prob(z), n_samples=10)  # q = p: log 1
        tensor([0., 0., 0.])
    """
    check_int("n_samples", n_samples, low=1)
    check_int("chunk_size", chunk_size, low=1)
    batch = x.shape[0]

    def chunk(s: int) -> Tensor:
        z = posterior.sample((s,))
        log_pxz = log_joint(x, z)
        if log_pxz.shape != (s, batch):
            raise ValueError(
                f"Expected `log_joint` to return shape {(s, batch)} for z of shape {tuple(z.shape)}, "
                f"got {tuple(log_pxz.shape)}"
            )
        return at_least_float32(log_pxz) - at_least_float32(posterior.log_prob(z))

    return _accumulate(chunk, batch, n_samples, chunk_size, between_chunks)


def _accumulate(
    log_weights: Callable[[int], Tensor],
    batch: int,
    n_samples: int,
    chunk_size: int,
    between_chunks: Callable[[], None] | None = None,
) -> Tensor:
    """``logsumexp - log k`` over ``n_samples`` log-weights drawn ``s`` at a time (``log_weights(s)``: ``(s, B)``);
    ``between_chunks()`` before every chunk after the first.

    The running total is kept in float64: in float32 a pass adds ``log1p(exp(chunk - total))`` ≈ (its share of
    the weight) to a total whose spacing is ``|total|·1.2e-7``, so with many passes at large ``|log w|`` (one
    sample per pass, log-weights near -1e4: increments of 1/k against a spacing of 1e-3) most of them round
    away and the estimate drifts low by up to a nat. The result is returned in the log-weights' type (at least
    float32).
    """
    per_pass = max(1, chunk_size // max(batch, 1))
    total: Tensor | None = None
    dtype = torch.float32
    done = 0
    with torch.no_grad():
        while done < n_samples:
            if done and between_chunks is not None:
                between_chunks()
            s = min(per_pass, n_samples - done)
            log_w = log_weights(s)
            if log_w.shape != (s, batch):
                raise ValueError(f"Expected log-weights of shape {(s, batch)}, got {tuple(log_w.shape)}")
            dtype = at_least_float32(log_w).dtype
            chunk = torch.logsumexp(log_w.double(), dim=0)
            total = chunk if total is None else torch.logaddexp(total, chunk)
            done += s
    assert total is not None
    return (total - math.log(n_samples)).to(dtype)


def iw_nll(
    model: Any,
    x: Tensor,
    n_samples: int = 5000,
    chunk_size: int = IW_CHUNK_SIZE,
    between_chunks: Callable[[], None] | None = None,
    context: Tensor | None = None,
) -> Tensor:
    """Importance-weighted negative log-likelihood ``-log p(x)`` of each example of ``x`` under ``model``, ``(B,)``.

    A model with ``log_weights(x, s)`` (:class:`~lightning_vae.protocols.SupportsLogWeights`: ``VAE`` and every
    :class:`~lightning_vae.models.LatentVariableModel`) is evaluated on its full joint, every latent group drawn
    from its posterior; any other model keeps :class:`~lightning_vae.protocols.SupportsLogJoint` (one group), see
    :func:`iw_log_likelihood`. Both draw ``n_samples`` per example in chunks of at most ``chunk_size`` pairs,
    calling ``between_chunks()`` (if given) between them. A ``context`` (the batch's labels or features, for a
    conditional model) gives ``-log p(x | context)``.

    Raises:
        TypeError: If ``model`` has no ``encode`` or ``log_joint`` (the message names what it lacks).

    Example::

        >>> from torch.distributions import Independent, Normal
        >>> class Model:  # q(z|x) = p(z) = N(0, I) and p(x|z) = 1: log p(x) = 0
        ...     def encode(self, x):
        ...         return Independent(Normal(torch.zeros(len(x), 2), torch.ones(len(x), 2)), 1)
        ...     def log_joint(self, x, z):
        ...         return Independent(Normal(torch.zeros(2), torch.ones(2)), 1).log_prob(z)
        >>> iw_nll(Model(), torch.zeros(3, 1), n_samples=4).abs().max().item() < 1e-6
        True
    """
    check_int("n_samples", n_samples, low=1)
    check_int("chunk_size", chunk_size, low=1)
    if callable(getattr(model, "log_weights", None)):  # the full joint of every latent group
        extra = {} if context is None else {"context": context}
        weights = lambda s: model.log_weights(x, s, **extra)  # noqa: E731
        return -_accumulate(weights, x.shape[0], n_samples, chunk_size, between_chunks)
    require(model, SupportsLogJoint, "iw_nll")
    with torch.no_grad():
        posterior = model.encode(x)
        return -iw_log_likelihood(
            x, posterior, model.log_joint, n_samples=n_samples, chunk_size=chunk_size, between_chunks=between_chunks
        )


__all__ = ["IW_CHUNK_SIZE", "SupportsLogJoint", "iw_log_likelihood", "iw_nll"]
