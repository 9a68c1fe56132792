"""The mutual information gap (MIG, Chen et al. 2018) between latent codes and ground-truth factors.

The estimator is the one of the common disentanglement benchmarks (Locatello et al. 2019): each
latent dimension of the codes (usually posterior means) is discretised into ``n_bins`` equal-width
bins between its minimum and maximum, and the discrete mutual information with each (discrete)
factor is read from the contingency table. The bins are those of disentanglement_lib's
``_histogram_discretize`` (``np.digitize(c, np.histogram(c, n_bins)[1][:-1])``), edges included:
built in the codes' own type, so float32 codes are binned against float32 edges.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from lightning_vae.checks import check_int


def require_sklearn(what: str, module: str) -> ModuleType:
    """``sklearn.<module>``, which the classifier-based metrics need (scikit-learn is an optional dependency).

    Raises:
        ImportError: Naming ``what`` and the extra that installs scikit-learn.
    """
    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError as err:
        raise ImportError(
            f"{what} needs scikit-learn: pip install 'lightning-vae[disentanglement]' (or scikit-learn)"
        ) from err


def discretize(codes: Tensor, n_bins: int = 20) -> Tensor:
    """Bin each column of ``codes`` ``(N, D)`` into ``n_bins`` equal-width bins over its range; ``(N, D)`` int64.

    The edges are NumPy's (``numpy.histogram``, the binning of disentanglement_lib): ``low + i · ((high - low) /
    n_bins)`` with the last one exactly ``high`` (``low ∓ 0.5``, ``high ± 0.5`` for a constant column), computed in
    the codes' type (float64 for integer codes; bfloat16 codes in float32), and a code equal to an inner edge goes
    to the bin above it. Float32 codes binned against float64 edges would land one bin lower wherever rounding
    an edge to float32 moves it past a code.

    Example::

        >>> import torch
        >>> discretize(torch.tensor([[0.0], [0.4], [1.0]]), n_bins=2).flatten()
        tensor([0, 0, 1])
    """
    if codes.dim() != 2:
        raise ValueError(f"Expected codes of shape (N, D), got {tuple(codes.shape)}")
    check_int("n_bins", n_bins, low=1)
    if not codes.is_floating_point():
        codes = codes.double()
    elif codes.dtype == torch.bfloat16:
        codes = codes.float()
    # The edges of every column at once, where the codes are (no host read): those of numpy.linspace in the codes'
    # type, ``i * ((high - low) / n_bins) + low`` in that order, the last one exactly ``high``.
    low, high = codes.amin(0), codes.amax(0)
    constant = low == high
    low, high = torch.where(constant, low - 0.5, low), torch.where(constant, high + 0.5, high)
    steps = torch.arange(n_bins + 1, dtype=codes.dtype, device=codes.device).unsqueeze(1)
    edges = steps * ((high - low) / n_bins) + low  # (n_bins + 1, D)
    edges[-1] = high
    inner = edges[1:-1].T.contiguous()  # (D, n_bins - 1)
    return torch.searchsorted(inner, codes.T.contiguous(), right=True).T


def _labels(values: Tensor) -> tuple[Tensor, int]:
    """Map any integer labels to ``0..n-1``; return them and ``n``."""
    unique, inverse = torch.unique(values, return_inverse=True)
    return inverse, unique.numel()


def discrete_entropy(labels: Tensor) -> Tensor:
    """Entropy in nats of the empirical distribution of integer ``labels`` ``(N,)``."""
    counts = torch.unique(labels, return_counts=True)[1].double()
    p = counts / counts.sum()
    return -(p * p.log()).sum()


def discrete_mutual_information(a: Tensor, b: Tensor) -> Tensor:
    """Mutual information in nats between two integer label vectors of the same length, from their contingency table.

    Example::

        >>> import torch
        >>> labels = torch.tensor([0, 1, 0, 1])
        >>> round(discrete_mutual_information(labels, labels).item(), 4)  # = H = log 2
        0.6931
    """
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"Expected two label vectors of the same length, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, na = _labels(a)
    b, nb = _labels(b)
    joint = torch.bincount(a * nb + b, minlength=na * nb).view(na, nb).double()
    joint = joint / joint.sum()
    pa, pb = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return (joint[nz] * (joint[nz].log() - (pa * pb).expand_as(joint)[nz].log())).sum()


def mutual_information_gap(codes: Tensor, factors: Tensor, n_bins: int = 20) -> Tensor:
    """MIG: for each factor, the gap between the two largest ``I(z_j; v_k)``, over ``H(v_k)``, averaged over factors.

    ``MIG = 1/K sum_k (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k)`` in ``[0, 1]``: 1 when each factor
    is captured by one latent dimension alone (and the bins resolve it), 0 when no dimension
    stands out. Factors that do not vary in the set are left out.

    Args:
        codes: Latent codes (usually posterior means) ``(N, D)`` with ``D >= 2``.
        factors: Ground-truth discrete factors ``(N, K)`` (integer indices).
        n_bins: Bins per latent dimension.

    Raises:
        ValueError: For mismatched shapes, fewer than two latent dimensions, or no varying factor.

    Example::

        >>> import torch
        >>> f = torch.cartesian_prod(torch.arange(4), torch.arange(3))  # two independent factors
        >>> round(mutual_information_gap(f.float(), f, n_bins=4).item(), 4)  # one dimension per factor
        1.0
        >>> round(mutual_information_gap(torch.stack([f.sum(1), f.sum(1)], 1).float(), f).item(), 4)  # entangled
        0.0
    """
    if codes.dim() != 2 or factors.dim() != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(
            "Expected codes (N, D) and factors (N, K) with the same N, got "
            f"{tuple(codes.shape)} and {tuple(factors.shape)}"
        )
    if codes.shape[1] < 2:
        raise ValueError(f"The mutual information gap needs at least 2 latent dimensions, got {codes.shape[1]}")
    binned = discretize(codes, n_bins)
    gaps = []
    for k in range(factors.shape[1]):
        v = factors[:, k].long()
        h = discrete_entropy(v)
        if h <= 0:
            continue
        mi = torch.stack([discrete_mutual_information(binned[:, j], v) for j in range(binned.shape[1])])
        top = torch.topk(mi, 2).values
        gaps.append((top[0] - top[1]) / h)
    if not gaps:
        raise ValueError("The mutual information gap needs at least one factor that varies over the set")
    return torch.stack(gaps).mean()


__all__ = [
    "discrete_entropy",
    "discrete_mutual_information",
    "discretize",
    "mutual_information_gap",
    "require_sklearn",
]
