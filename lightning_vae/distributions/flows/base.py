"""Normalising-flow posteriors: a base distribution pushed through invertible maps with known log-determinants.

``z_K = f_K ∘ … ∘ f_1 (z_0)`` with ``z_0 ~ q_0(z | x)``, and by the change of variables
``log q_K(z_K) = log q_0(z_0) - Σ_k log |det ∂f_k / ∂z_{k-1}|`` (Rezende & Mohamed 2015). The density is exact at
the samples the posterior draws itself; the flows here (planar, IAF) have no inverse in closed form, so the
density of any other point is not available. The objective needs no more: its Monte Carlo KL and the IWAE bound
evaluate ``log q`` at the very samples the posterior returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from lightning_vae.checks import check_type


class Flow(nn.Module):
    """One invertible map ``z -> f(z; context)`` of vectors ``(..., D)`` and its log-determinant.

    Subclasses implement :meth:`forward`, returning ``(f(z), log |det ∂f/∂z|)`` with the log-determinant of
    shape ``z.shape[:-1]``. ``context`` (e.g. an encoder's ``h``, ``(B, C)``) broadcasts against ``z``'s leading
    dimensions; flows that take none ignore it.
    """

    dim: int

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """``(f(z), log |det J|)``."""
        raise NotImplementedError


def apply_flows(flows: Sequence[Flow], z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Push ``z`` through ``flows`` in order: ``(z_K, Σ_k log |det J_k|)``, the sum of shape ``z.shape[:-1]``.

    Example::

        >>> import torch
        >>> from lightning_vae.distributions.flows import PlanarFlow
        >>> z, log_det = apply_flows([PlanarFlow(3), PlanarFlow(3)], torch.randn(5, 3))
        >>> z.shape, log_det.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    total = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    for flow in flows:
        z, log_det = flow(z, context)
        total = total + log_det
    return z, total


class FlowPosterior(Distribution):
    """``q_K(z | x)``: samples of a base posterior pushed through flows, with their exact log-density.

    :meth:`rsample` (and :meth:`sample`) draws ``z_0`` from ``base``, applies the flows and keeps
    ``log q_0(z_0) - Σ log |det J|`` for the tensor it returns; :meth:`log_prob` of that very tensor returns it
    (``base.log_prob`` of its own sample is exact, e.g. the diagonal Gaussian's from its noise). The returned
    samples are at least float32 (under autocast the flows may compute in half precision), so the objective's
    ``z.float()`` is the same tensor. ``log_prob`` of any other value raises a ``ValueError`` when there are
    flows (they have no closed-form inverse); without flows it is the base's.

    :attr:`mean` is not the expectation (which has no closed form): it is the image of the base mean under the
    flows, a deterministic point used to reconstruct and for posterior-mean views.

    Args:
        base: ``q_0(z | x)`` with event shape ``(D,)`` and ``rsample`` (a diagonal or full-covariance Gaussian).
        flows: The maps, applied in order, each keeping the size ``D``.
        context: What the flows are conditioned on, broadcasting against the samples (IAF's ``h``), or ``None``.

    Example::

        >>> import torch
        >>> from lightning_vae.distributions import DiagonalGaussian
        >>> from lightning_vae.distributions.flows import PlanarFlow
        >>> q = FlowPosterior(DiagonalGaussian(torch.zeros(4, 2), torch.zeros(4, 2)), [PlanarFlow(2)])
        >>> z = q.rsample((3,))
        >>> z.shape, q.log_prob(z).shape
        (torch.Size([3, 4, 2]), torch.Size([3, 4]))
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base: Distribution, flows: Sequence[Flow], context: Tensor | None = None) -> None:
        check_type("base", base, Distribution, "a torch Distribution with event shape (D,)")
        if len(base.event_shape) != 1 or not base.has_rsample:
            raise ValueError(
                f"Expected `base` to be reparameterisable with event shape (D,), got {type(base).__name__} with "
                f"event shape {tuple(base.event_shape)}"
            )
        self.flows = list(flows)
        for i, flow in enumerate(self.flows):
            check_type(f"flows[{i}]", flow, Flow, "a lightning_vae.distributions.flows.Flow")
            if flow.dim != base.event_shape[0]:
                raise ValueError(f"Expected `flows[{i}]` to act on size {base.event_shape[0]}, got size {flow.dim}")
        if context is not None:
            check_type("context", context, Tensor, "a tensor or None")
        self.base, self.context = base, context
        self._last_sample: tuple[Tensor, Tensor] | None = None
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def rsample(self, sample_shape: Any = ()) -> Tensor:  # noqa: D102
        z0 = self.base.rsample(sample_shape)
        log_q0 = self.base.log_prob(z0)
        z, log_det = apply_flows(self.flows, z0, self.context)
        dtype = torch.promote_types(z.dtype, torch.float32)
        z = z.to(dtype)
        self._last_sample = (z, log_q0.to(dtype) - log_det.to(dtype))
        return z

    def sample(self, sample_shape: Any = ()) -> Tensor:  # noqa: D102
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """``log q_K`` of the sample :meth:`rsample` returned last (the same tensor object).

        Raises:
            ValueError: For any other value when there are flows: the flows cannot be inverted in closed form.
        """
        last = self._last_sample
        if last is not None and value is last[0]:
            return last[1]
        if not self.flows:
            return self.base.log_prob(value)
        raise ValueError(
            "FlowPosterior.log_prob is exact only for the sample its rsample()/sample() returned last (the same "
            "tensor object, not a copy or slice): the flows have no closed-form inverse. Evaluate log q right "
            "after drawing, on the returned tensor"
        )

    @property
    def mean(self) -> Tensor:
        """The base mean pushed through the flows (not the expectation of ``q_K``, which has no closed form)."""
        return apply_flows(self.flows, self.base.mean, self.context)[0]

    @property
    def variance(self) -> Tensor:
        """Not available: the variance of ``q_K`` has no closed form (estimate it from samples).

        Raises:
            NotImplementedError: Always.
        """
        raise NotImplementedError(
            "FlowPosterior has no closed-form variance (nor a log-density away from its own samples): monitors that "
            "need them, such as PosteriorCollapseMonitor, need a Gaussian posterior"
        )


__all__ = ["Flow", "FlowPosterior", "apply_flows"]
