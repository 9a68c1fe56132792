"""What the image views draw, as plain functions of a module: prior samples, reconstructions, latent traversals.

The callbacks (:class:`~lightning_vae.callbacks.PriorSampleLogger`, ...) and ``lightning-vae sample`` /
``reconstruct`` draw through these, so a grid written at the command line is the one the logger
shows for the same weights and seed. Every function runs under ``torch.no_grad`` and returns float
tensors in data space.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_vae.checks import check_int
from lightning_vae.functional import posterior_mean_variance
from lightning_vae.viz.grid import interleave_rows

__all__ = ["latent_traversal", "prior_samples", "reconstruction_rows"]


def prior_samples(module: Any, n: int, seed: int = 0) -> Tensor:
    """``n`` samples ``module.sample(n)`` drawn from a fixed ``seed``, leaving the global random state untouched.

    The same ``n`` and ``seed`` give the same latent noise on every call, so the samples of one
    model over training differ only by its weights.

    Args:
        module: Anything with ``sample(n)`` and ``device`` (as :class:`~lightning_vae.VAE`).
        n: Number of samples.
        seed: Seed of the latent noise.

    Raises:
        TypeError: For ``n`` or ``seed`` that is not an int.
        ValueError: For ``n`` below 1.

    Example::

        >>> from lightning_vae import VAE
        >>> from lightning_vae.nets import MLPDecoder, MLPEncoder
        >>> vae = VAE(MLPEncoder((1, 4, 4), latent_dim=2), MLPDecoder(2, (1, 4, 4)))
        >>> bool((prior_samples(vae, 3, seed=1) == prior_samples(vae, 3, seed=1)).all())
        True
    """
    check_int("n", n, low=1)
    check_int("seed", seed)
    device = torch.device(getattr(module, "device", "cpu"))
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        return module.sample(n).float()  # type: ignore[no-any-return]


def reconstruction_rows(module: Any, x: Tensor, nrow: int = 8, fill: float = 1.0) -> Tensor:
    """Rows of ``nrow`` inputs, each followed by the row of their reconstructions ``module.reconstruct(x)``.

    Tile the result with :func:`~lightning_vae.viz.make_grid` and the same ``nrow``.

    Args:
        module: Anything with ``reconstruct(x)`` (data space) and ``device``.
        x: Inputs ``(N, *data_shape)``.
        nrow: Examples per row.
        fill: Value of the empty cells of a short last row.
    """
    with torch.no_grad():
        x = x.to(getattr(module, "device", x.device)).float()
        recon = module.reconstruct(x).float().reshape(x.shape)
    return interleave_rows(x, recon, nrow, fill=fill)


def latent_traversal(
    module: Any, x: Tensor, n_dims: int = 8, n_steps: int = 9, limit: float = 3.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Traverse the most active latent dimensions, one row each, from the posterior mean of ``x[0]``.

    Activity is the variance over ``x`` of the posterior mean of each dimension (Burda et al. 2015).
    Row ``r`` sweeps dimension ``dims[r]`` over ``n_steps`` values evenly spaced in ``[-limit, limit]``,
    the other dimensions held at the posterior mean of the first example.

    Args:
        module: Anything with ``encode(x)`` (a distribution with ``.mean``) and ``decode(z)``, and
            optionally ``likelihood.mean`` (the decoder output is shown as is without it).
        x: At least two examples ``(N, *data_shape)``.
        n_dims: Rows (at most the latent size).
        n_steps: Values per row.
        limit: The sweep covers ``[-limit, limit]``.

    Returns:
        ``(images, dims, activity)``: images ``(k * n_steps, *data_shape)`` row by row, the dimension
        of each row ``(k,)`` by falling activity, and the activity of every dimension ``(D,)``.
    """
    with torch.no_grad():
        means = module.encode(x).mean.float()
        activity = posterior_mean_variance(means).float()
        k = min(n_dims, means.shape[-1])
        dims = torch.argsort(activity, descending=True, stable=True)[:k]
        values = torch.linspace(-limit, limit, n_steps, device=means.device)
        z = means[0].repeat(k, n_steps, 1)  # (k, steps, D)
        z[torch.arange(k, device=z.device), :, dims] = values.expand(k, -1)
        z = z.reshape(k * n_steps, -1)
        params = module.decode(z)
        likelihood = getattr(module, "likelihood", None)
        images = likelihood.mean(params) if likelihood is not None else params
    return images.float(), dims, activity
