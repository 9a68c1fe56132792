"""The FactorVAE and β-VAE scores as torchmetrics metrics: they keep the codes of groups of images drawn from a
ground-truth source with a factor held fixed, in any number of batches and processes.

The draws themselves are :func:`~lightning_vae.functional.interventional.fixed_factor_groups` and
:func:`~lightning_vae.functional.interventional.pair_groups`; :func:`~lightning_vae.functional.interventional.
factor_vae_score` and :func:`~lightning_vae.functional.interventional.beta_vae_score` run the whole protocol in one
process. Every state is a concatenation (``dist_reduce_fx="cat"``), so processes that each encode their share of
the groups together give the score of all of them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_vae.checks import check_choice, check_float, check_int
from lightning_vae.functional.interventional import (
    active_dimensions,
    beta_vae_accuracy,
    beta_vae_features,
    factor_vae_votes,
    group_variances,
    majority_vote_accuracy,
)

#: Which set a group belongs to: the classifier's training set or the one it is scored on.
GroupSplit = Literal["train", "eval"]


def _fixed(fixed_factor: int | Tensor, groups: int, device: torch.device) -> Tensor:
    if isinstance(fixed_factor, int) and not isinstance(fixed_factor, bool):
        return torch.full((groups,), fixed_factor, dtype=torch.long, device=device)
    if not isinstance(fixed_factor, Tensor) or fixed_factor.shape != (groups,):
        got = tuple(fixed_factor.shape) if isinstance(fixed_factor, Tensor) else repr(fixed_factor)
        raise ValueError(f"Expected `fixed_factor` to be an int or a tensor of shape ({groups},), got {got}")
    return fixed_factor.detach().long()


def _empty(state: list[Tensor] | Tensor) -> bool:
    """Whether a cat state holds nothing (a list before the processes' states are gathered, a tensor after)."""
    return state.numel() == 0 if isinstance(state, Tensor) else not state


def _check_groups(name: str, codes: Tensor) -> None:
    if codes.dim() != 3 or codes.shape[1] < 2:
        raise ValueError(f"Expected `{name}` of shape (G, B, D) with B >= 2, got {tuple(codes.shape)}")


class FactorVAEScore(Metric):
    """The FactorVAE score (Kim & Mnih 2018) from codes of groups with one factor held fixed.

    Two kinds of update:

    - ``update(codes)`` with codes ``(N, D)`` of random images: the global variances that normalise each
      dimension (and decide the active ones);
    - ``update(codes, fixed_factor, split)`` with codes ``(G, B, D)`` of ``G`` groups of ``B`` images, each with the
      factor ``fixed_factor`` (an int, or ``(G,)``) held fixed; ``split="train"`` groups vote for the majority-vote
      classifier, ``"eval"`` groups score it.

    ``compute()`` returns ``{"train_accuracy", "eval_accuracy", "active_dims"}``, the numbers of
    :func:`~lightning_vae.functional.interventional.factor_vae_score` on the same codes.

    Args:
        n_factors: Number of ground-truth factors.
        prune_threshold: Least standard deviation of an active dimension.

    Example::

        >>> import torch
        >>> metric = FactorVAEScore(n_factors=2)
        >>> metric.update(torch.randn(100, 2, generator=torch.Generator().manual_seed(0)))
        >>> group = torch.stack([torch.zeros(8), torch.linspace(-1, 1, 8)], 1)  # dimension 0 constant
        >>> metric.update(group.expand(3, 8, 2), fixed_factor=0)
        >>> metric.update(group.flip(-1).expand(2, 8, 2), fixed_factor=1)
        >>> metric.update(group.expand(1, 8, 2), fixed_factor=0, split="eval")
        >>> metric.compute()["eval_accuracy"].item()
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    global_codes: list[Tensor]
    local_variances: list[Tensor]
    fixed_factor: list[Tensor]
    evaluation: list[Tensor]

    def __init__(self, n_factors: int, prune_threshold: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_factors = check_int("n_factors", n_factors, low=1)
        self.prune_threshold = check_float("prune_threshold", prune_threshold, low=0.0)
        for name in ("global_codes", "local_variances", "fixed_factor", "evaluation"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, codes: Tensor, fixed_factor: int | Tensor | None = None, split: GroupSplit = "train") -> None:
        """Add codes of random images ``(N, D)``, or of ``G`` groups ``(G, B, D)`` with ``fixed_factor`` held fixed."""
        if fixed_factor is None:
            if codes.dim() != 2:
                raise ValueError(f"Expected codes of random images (N, D), got {tuple(codes.shape)}")
            self.global_codes.append(codes.detach().double())
            return
        check_choice("split", split, GroupSplit)
        _check_groups("codes", codes)
        fixed = _fixed(fixed_factor, codes.shape[0], codes.device)
        if (fixed < 0).any() or (fixed >= self.n_factors).any():
            raise ValueError(f"Expected `fixed_factor` in [0, {self.n_factors}), got {fixed.tolist()}")
        variances = group_variances(codes.detach().double().cpu().numpy())
        self.local_variances.append(torch.from_numpy(variances).to(codes.device))
        self.fixed_factor.append(fixed)
        self.evaluation.append(torch.full_like(fixed, split == "eval", dtype=torch.bool))

    def compute(self) -> dict[str, Tensor]:
        if _empty(self.global_codes) or _empty(self.local_variances):
            raise ValueError("FactorVAEScore needs codes of random images and of groups before compute()")
        global_variances = np.var(dim_zero_cat(self.global_codes).cpu().numpy(), axis=0, ddof=1)
        active = active_dimensions(global_variances, self.prune_threshold)
        if not active.any():
            return {
                k: torch.tensor(0.0, dtype=torch.float64) for k in ("train_accuracy", "eval_accuracy", "active_dims")
            }
        local = dim_zero_cat(self.local_variances).cpu().numpy()
        fixed = dim_zero_cat(self.fixed_factor).cpu().numpy()
        evaluation = dim_zero_cat(self.evaluation).cpu().numpy().astype(bool)
        if evaluation.all() or not evaluation.any():
            raise ValueError("FactorVAEScore needs groups of both splits, 'train' and 'eval'")
        votes = [
            factor_vae_votes(local[mask], fixed[mask], global_variances, active, self.n_factors)
            for mask in (~evaluation, evaluation)
        ]
        train, evaluation_accuracy = majority_vote_accuracy(*votes)
        return {
            "train_accuracy": torch.tensor(train, dtype=torch.float64),
            "eval_accuracy": torch.tensor(evaluation_accuracy, dtype=torch.float64),
            "active_dims": torch.tensor(float(active.sum()), dtype=torch.float64),
        }


class BetaVAEScore(Metric):
    """The β-VAE score (Higgins et al. 2017) from codes of pairs of groups that share one factor.

    ``update(codes_a, codes_b, fixed_factor, split)``: codes ``(G, B, D)`` of the two groups of each of ``G``
    points, whose shared factor is ``fixed_factor`` (an int, or ``(G,)``). Each point's feature is
    ``mean_b |codes_a - codes_b|``; a logistic regression fitted on the ``"train"`` points is scored on the
    ``"eval"`` ones. ``compute()`` returns ``{"train_accuracy", "eval_accuracy"}``.

    Args:
        seed: ``random_state`` of the logistic regression.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    features: list[Tensor]
    labels: list[Tensor]
    evaluation: list[Tensor]

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = check_int("seed", seed)
        for name in ("features", "labels", "evaluation"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, codes_a: Tensor, codes_b: Tensor, fixed_factor: int | Tensor, split: GroupSplit = "train") -> None:
        """Add ``G`` points: codes ``(G, B, D)`` of their two groups and the factor they share."""
        check_choice("split", split, GroupSplit)
        _check_groups("codes_a", codes_a)
        if codes_b.shape != codes_a.shape:
            raise ValueError(
                f"Expected `codes_b` of the shape of `codes_a` {tuple(codes_a.shape)}, got {tuple(codes_b.shape)}"
            )
        fixed = _fixed(fixed_factor, codes_a.shape[0], codes_a.device)
        a, b = (c.detach().double().cpu().numpy() for c in (codes_a, codes_b))
        self.features.append(torch.from_numpy(beta_vae_features(a, b)).to(codes_a.device))
        self.labels.append(fixed)
        self.evaluation.append(torch.full_like(fixed, split == "eval", dtype=torch.bool))

    def compute(self) -> dict[str, Tensor]:
        if _empty(self.features):
            raise ValueError("BetaVAEScore needs points before compute()")
        features = dim_zero_cat(self.features).cpu().numpy()
        labels = dim_zero_cat(self.labels).cpu().numpy()
        evaluation = dim_zero_cat(self.evaluation).cpu().numpy().astype(bool)
        if evaluation.all() or not evaluation.any():
            raise ValueError("BetaVAEScore needs points of both splits, 'train' and 'eval'")
        train, evaluation_accuracy = beta_vae_accuracy(
            features[~evaluation], labels[~evaluation], features[evaluation], labels[evaluation], self.seed
        )
        return {
            "train_accuracy": torch.tensor(train, dtype=torch.float64),
            "eval_accuracy": torch.tensor(evaluation_accuracy, dtype=torch.float64),
        }


__all__ = ["BetaVAEScore", "FactorVAEScore", "GroupSplit"]
