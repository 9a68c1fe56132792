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
from lightning_vae.models.base import as_model_input
from lightning_vae.viz.grid import interleave_rows

__all__ = [
    "class_samples",
    "first_sample",
    "group_means",
    "latent_groups",
    "latent_traversal",
    "prior_samples",
    "reconstruction_rows",
]


def _fork(module: Any) -> Any:
    device = torch.device(getattr(module, "device", "cpu"))
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    return torch.random.fork_rng(devices=devices)


def prior_samples(module: Any, n: int, seed: int = 0, context: Tensor | None = None) -> Tensor:
    """``n`` samples ``module.sample(n)`` drawn from a fixed ``seed``, leaving the global random state untouched.

    The same ``n`` and ``seed`` give the same latent noise on every call, so the samples of one
    model over training differ only by its weights.

    Args:
        module: Anything with ``sample(n)`` and ``device`` (as :class:`~lightning_vae.VAE`).
        n: Number of samples.
        seed: Seed of the latent noise.
        context: For a conditional model, the context of each sample (``n`` rows, or one row for all).

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
    with _fork(module), torch.no_grad():
        torch.manual_seed(seed)
        if context is None:
            return module.sample(n).float()  # type: ignore[no-any-return]
        return module.sample(n, context=context.to(getattr(module, "device", context.device))).float()  # type: ignore[no-any-return]


def class_samples(module: Any, n_per_class: int, seed: int = 0) -> Tensor:
    """Samples of a class-conditional model, one row per class, the same latent noise in every row.

    Row ``c`` holds ``n_per_class`` samples of ``p(x | z_j, y = c)`` (the likelihood's mean) for the same ``z_j``
    in every row, so a column shows one "style" across the classes (Kingma et al. 2014, Fig. 1; Sohn et al. 2015).

    Args:
        module: A module whose ``model`` (or itself) is conditional on labels: ``n_classes``, ``prior_sample``,
            ``generative(z, context=labels)`` and ``likelihood``.
        n_per_class: Samples per class (columns).
        seed: Seed of the latent noise.

    Returns:
        ``(n_classes * n_per_class, *data_shape)``, class by class.

    Raises:
        ValueError: For a model that is not conditional on class labels.

    Example::

        >>> import torch
        >>> from lightning_vae.models import ConditionalVAEModel
        >>> from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder
        >>> model = ConditionalVAEModel(
        ...     ConditionalMLPEncoder((1, 4, 4), 3, 2), ConditionalMLPDecoder(2, 3, (1, 4, 4)), n_classes=3
        ... )
        >>> class_samples(model, n_per_class=5).shape
        torch.Size([15, 1, 4, 4])
    """
    check_int("n_per_class", n_per_class, low=1)
    model = _model(module)
    n_classes = getattr(model, "n_classes", None)
    if not getattr(model, "conditional", False) or not isinstance(n_classes, int):
        raise ValueError(f"Expected a model conditional on class labels (with `n_classes`), got {type(model).__name__}")
    with _fork(module), torch.no_grad():
        torch.manual_seed(seed)
        z = model.prior_sample(n_per_class)
    device = next(iter(z.values())).device
    labels = torch.arange(n_classes, device=device).repeat_interleave(n_per_class)
    with torch.no_grad():
        tiled = {name: v.repeat(1, n_classes, 1) for name, v in z.items()}  # (1, C * n, D): class-major
        params = model.generative(tiled, context=labels).params[0]
        return model.likelihood.mean(params).float()  # type: ignore[no-any-return]


def reconstruction_rows(
    module: Any, x: Tensor, nrow: int = 8, fill: float = 1.0, context: Tensor | None = None
) -> Tensor:
    """Rows of ``nrow`` inputs, each followed by the row of their reconstructions ``module.reconstruct(x)``.

    Tile the result with :func:`~lightning_vae.viz.make_grid` and the same ``nrow``.

    Args:
        module: Anything with ``reconstruct(x)`` (data space) and ``device``.
        x: Inputs ``(N, *data_shape)``.
        nrow: Examples per row.
        fill: Value of the empty cells of a short last row.
        context: For a conditional model, the context of each input.
    """
    with torch.no_grad():
        x = x.to(getattr(module, "device", x.device)).float()
        extra = {} if context is None else {"context": context.to(x.device)}
        recon = module.reconstruct(x, **extra).float().reshape(x.shape)
    return interleave_rows(x, recon, nrow, fill=fill)


def latent_groups(module: Any) -> tuple[str, ...]:
    """The latent group names of ``module`` (its ``model``'s, or its own), top group first; ``()`` when it has none.

    Example::

        >>> from lightning_vae.models import StackedVAEModel
        >>> latent_groups(StackedVAEModel((1, 4, 4), latent_sizes=(3, 2), hidden_sizes=((8,), (8,))))
        ('z2', 'z1')
    """
    names = getattr(getattr(module, "model", module), "group_names", None)
    return tuple(names) if isinstance(names, (tuple, list)) else ()


def _model(module: Any) -> Any:
    return getattr(module, "model", module)


def _check_group(module: Any, group: str) -> str:
    names = latent_groups(module)
    if group not in names:
        raise ValueError(f"Expected `group` to be one of the latent groups {names}, got {group!r}")
    return group


def first_sample(values: Tensor) -> Tensor:
    """The first of ``k`` samples ``(k, B, D)`` (a model pass's shape), ``(B, D)``; values of another rank as given.

    Example::

        >>> import torch
        >>> first_sample(torch.zeros(3, 2, 4)).shape, first_sample(torch.zeros(2, 4)).shape
        (torch.Size([2, 4]), torch.Size([2, 4]))
    """
    return values[0] if values.dim() == 3 else values


def group_means(module: Any, x: Tensor, group: str) -> Tensor:
    """The posterior mean of latent group ``group`` for each example of ``x``, ``(N, D_group)``.

    Taken from ``model.inference(x, 1)`` (one sample of the groups it is conditioned on). For a flow posterior the
    mean is its base mean pushed through the flows (see :class:`~lightning_vae.distributions.FlowPosterior`).

    Raises:
        ValueError: For a group the module's model does not have.
    """
    _check_group(module, group)
    with torch.no_grad():
        model = _model(module)
        mean = model.inference(as_model_input(model, x), 1).posteriors[group].mean
    return first_sample(mean).float()


def _traversal_dims(means: Tensor, n_dims: int) -> tuple[Tensor, Tensor]:
    """``(dims by falling activity (k,), activity (D,))``: the variance over the examples of each posterior mean."""
    activity = posterior_mean_variance(means).float()
    dims = torch.argsort(activity, descending=True, stable=True)[: min(n_dims, means.shape[-1])]
    return dims, activity


def _sweep(start: Tensor, dims: Tensor, n_steps: int, limit: float) -> Tensor:
    """``(k * n_steps, D)``: ``start`` with dimension ``dims[r]`` swept over ``[-limit, limit]`` in row ``r``."""
    k = dims.shape[0]
    values = torch.linspace(-limit, limit, n_steps, device=start.device)
    z = start.repeat(k, n_steps, 1)  # (k, steps, D)
    z[torch.arange(k, device=z.device), :, dims] = values.expand(k, -1)
    return z.reshape(k * n_steps, -1)


def latent_traversal(
    module: Any,
    x: Tensor,
    n_dims: int = 8,
    n_steps: int = 9,
    limit: float = 3.0,
    group: str | None = None,
    context: Tensor | None = None,
    condition: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Traverse the most active latent dimensions, one row each, from the posterior mean of ``x[0]``.

    Activity is the variance over ``x`` of the posterior mean of each dimension (Burda et al. 2015).
    Row ``r`` sweeps dimension ``dims[r]`` over ``n_steps`` values evenly spaced in ``[-limit, limit]``,
    the other dimensions held at the posterior mean of the first example.

    For a model of several latent groups (``module.model.group_names``), the traversal is in ``group`` (default
    the top group, the first name): the groups above it are held at the posterior means of ``x[0]``, and the groups
    below it are regenerated top-down from their conditional prior means given the traversed values
    (``generative(z).priors[g].mean``, one group at a time). Holding the lower groups at their posterior means
    instead would hide every change of an upper group, since ``p(x | z)`` reads the bottom group only. The images
    are the likelihood's mean of ``model.generative(z).params``.

    Args:
        module: Anything with ``encode(x)`` (a distribution with ``.mean``) and ``decode(z)``, and
            optionally ``likelihood.mean`` (the decoder output is shown as is without it); for several groups,
            a ``model`` (or the module itself) with ``group_names``, ``inference`` and ``generative``.
        x: At least two examples ``(N, *data_shape)``.
        n_dims: Rows (at most the latent size).
        n_steps: Values per row.
        limit: The sweep covers ``[-limit, limit]``.
        group: The latent group traversed (several groups only); ``None``: the top group.
        context: For a conditional model, the context of each example of ``x`` (the activity is measured on
            ``q(z | x, context)``).
        condition: For a conditional model, the one context every image of the traversal is decoded at (a fixed
            class, say); ``None``: the first example's.

    Returns:
        ``(images, dims, activity)``: images ``(k * n_steps, *data_shape)`` row by row, the dimension
        of each row ``(k,)`` by falling activity, and the activity of every dimension ``(D,)``.

    Raises:
        ValueError: For a ``group`` the model does not have.

    Example::

        >>> import torch
        >>> from lightning_vae import VAE
        >>> from lightning_vae.models import StackedVAEModel
        >>> vae = VAE(model=StackedVAEModel((1, 4, 4), latent_sizes=(3, 2), hidden_sizes=((8,), (8,))))
        >>> images, dims, activity = latent_traversal(vae, torch.rand(6, 1, 4, 4), n_dims=2, n_steps=5, group="z2")
        >>> images.shape, dims.shape, activity.shape
        (torch.Size([10, 1, 4, 4]), torch.Size([2]), torch.Size([2]))
    """
    names = latent_groups(module)
    if group is not None:
        _check_group(module, group)
    if context is not None:  # a conditional model: through its two paths, decoded at one context
        return _conditional_traversal(_model(module), x, context, condition, n_dims, n_steps, limit)
    if len(names) < 2:  # one group: the module's own encode and decode
        with torch.no_grad():
            means = module.encode(x).mean.float()
            dims, activity = _traversal_dims(means, n_dims)
            params = module.decode(_sweep(means[0], dims, n_steps, limit))
            likelihood = getattr(module, "likelihood", None)
            images = likelihood.mean(params) if likelihood is not None else params
        return images.float(), dims, activity
    group = names[0] if group is None else group
    model = _model(module)
    x = as_model_input(model, x)
    with torch.no_grad():
        inference = model.inference(x, 1)
        means = {name: first_sample(q.mean) for name, q in inference.posteriors.items()}
        dims, activity = _traversal_dims(means[group].float(), n_dims)
        swept = _sweep(means[group][0].float(), dims, n_steps, limit).to(means[group].dtype)
        z = {name: means[name][:1].expand(swept.shape[0], -1).unsqueeze(0) for name in names}  # (1, N, D_g)
        z[group] = swept.unsqueeze(0)
        for lower in names[names.index(group) + 1 :]:  # top-down: each lower group from its conditional prior mean
            z[lower] = model.generative(z).priors[lower].mean.expand_as(z[lower])
        params = model.generative(z).params[0]
        images = model.likelihood.mean(params)
    return images.float(), dims, activity


def _conditional_traversal(
    model: Any, x: Tensor, context: Tensor, condition: Tensor | None, n_dims: int, n_steps: int, limit: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The single-group traversal of a conditional model: activity on ``q(z | x, c)``, every image at one context."""
    name = model.group_names[0]
    x = as_model_input(model, x)
    context = context.to(x.device)
    with torch.no_grad():
        means = model.inference(x, 1, context=context).posteriors[name].mean.float()
        dims, activity = _traversal_dims(means, n_dims)
        swept = _sweep(means[0], dims, n_steps, limit).to(x.dtype if x.is_floating_point() else torch.float32)
        fixed = context[:1] if condition is None else condition.to(x.device).reshape(1, *context.shape[1:])
        at = fixed.expand(swept.shape[0], *fixed.shape[1:])
        params = model.generative({name: swept.unsqueeze(0)}, context=at).params[0]
        return model.likelihood.mean(params).float(), dims, activity
