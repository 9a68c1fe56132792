"""Likelihoods p(x|z): each turns decoder outputs into a log-probability summed over data dimensions.

Shapes: ``x`` is ``(B, *data_shape)``; the decoder output ``params`` is ``(*S, B, *param_shape)``
where ``S`` are optional leading sample dimensions (importance samples). ``log_prob`` returns
``(*S, B)`` in float32 nats, summed over every data dimension (the reduction rule of docs/architecture.md).

Numerical range: every likelihood computes in float32 (half-precision decoder outputs are cast
first, so they behave the same under autocast) and has finite values and gradients for any finite
parameters whose float64 log-probability is finite. Each class states how close it stays to a
float64 evaluation; the property tests under ``tests/numerics/`` check these bounds.

Each family lives in its own module (``base``, ``bernoulli``, ``scaled``, ``discrete``); import them from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lightning_vae.distributions.likelihoods.base import Likelihood
from lightning_vae.distributions.likelihoods.bernoulli import BernoulliLikelihood
from lightning_vae.distributions.likelihoods.discrete import CategoricalLikelihood, DiscretizedLogisticMixtureLikelihood
from lightning_vae.distributions.likelihoods.scaled import GaussianLikelihood, LaplaceLikelihood, ScaleMode

#: The likelihoods ``VAE`` builds by name, each from the shape of one example.
LIKELIHOODS: dict[str, Callable[[Sequence[int] | None], Likelihood]] = {
    "bernoulli": lambda data_shape: BernoulliLikelihood(),
    "gaussian": lambda data_shape: GaussianLikelihood("fixed"),
    "gaussian_learned": lambda data_shape: GaussianLikelihood("global"),
    "gaussian_per_dim": lambda data_shape: GaussianLikelihood("per_dim", data_shape=data_shape),
    "laplace": lambda data_shape: LaplaceLikelihood("fixed"),
    "categorical": lambda data_shape: CategoricalLikelihood(),
    "logistic_mixture": lambda data_shape: DiscretizedLogisticMixtureLikelihood(),
}

# Checkpoints and configs name a likelihood by its class path: keep it the package's public path
# (``lightning_vae.distributions.likelihoods.GaussianLikelihood``) whichever module defines the class.
for _cls in (
    Likelihood,
    BernoulliLikelihood,
    CategoricalLikelihood,
    DiscretizedLogisticMixtureLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "DiscretizedLogisticMixtureLikelihood",
    "GaussianLikelihood",
    "LaplaceLikelihood",
    "Likelihood",
    "ScaleMode",
]
