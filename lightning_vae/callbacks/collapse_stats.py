"""The collapse statistics of one latent group for :class:`~lightning_vae.callbacks.PosteriorCollapseMonitor`.

Each group keeps its own torchmetrics metrics (sum and cat states: the same numbers on one process and under
DDP) and decides at its first batch, from what the evaluation outputs give, how each quantity is obtained:

============================  =================================================================================
quantity                      how, in order of preference
============================  =================================================================================
active units                  ``"posterior mean"``: the posterior's mean (it has a closed-form mean and variance);
                              ``"sampled posterior means"``: means estimated from ``mc_samples`` draws of the
                              posterior, their Monte Carlo variance subtracted (a flow posterior);
                              ``"samples z"``: the variance of the one sample per example (no posterior given; an
                              upper bound, since it adds the posterior's own variance)
KL per dimension              ``"given"`` (the outputs' ``kl_per_dim``); ``"standard normal"``: the KL of each
                              posterior marginal ``N(mean, variance)`` to ``N(0, 1)`` (first group only, whose prior
                              is unconditional); else skipped (a flow's KL does not split into dimensions)
mutual information            ``"He et al. 2019"`` (needs ``q(z | x)`` at other examples' samples); else skipped
============================  =================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.distributions import Distribution

from lightning_vae.callbacks.views import first_sample
from lightning_vae.functional.collapse import count_collapsed, kl_to_standard_normal, sampled_means
from lightning_vae.metrics.collapse import ActiveUnits, KLPerDimension, MutualInformation

__all__ = ["GroupStatistics", "collapse_message", "read_groups", "totals"]

_CLOSED_FORM = "posterior mean"
_SAMPLED = "sampled posterior means"
_SAMPLES = "samples z"


def read_groups(outputs: Any, stage: str, default_name: str) -> dict[str, Mapping[str, Any]]:
    """Every group's ``{"posterior", "z", "kl_per_dim"}`` from a step's outputs (``groups``, or the top level).

    Raises:
        TypeError: For outputs that are not a mapping, or a group with neither a posterior nor samples ``z``.
    """
    if isinstance(outputs, Mapping) and isinstance(outputs.get("groups"), Mapping) and outputs["groups"]:
        groups = {str(name): group for name, group in outputs["groups"].items()}
    elif isinstance(outputs, Mapping) and isinstance(outputs.get("posterior"), Distribution):
        groups = {default_name: outputs}
    else:
        got = type(outputs).__name__ if not isinstance(outputs, Mapping) else f"a mapping with keys {sorted(outputs)}"
        raise TypeError(
            f"PosteriorCollapseMonitor expects {stage}_step to return a mapping with 'posterior' (a torch "
            f"Distribution over z) and 'z' (samples), or 'groups' of those per latent group, got {got}"
        )
    for name, group in groups.items():
        if not isinstance(group, Mapping) or not (
            isinstance(group.get("posterior"), Distribution) or isinstance(group.get("z"), Tensor)
        ):
            raise TypeError(
                f"PosteriorCollapseMonitor expects the {stage}_step outputs of group {name!r} to hold 'posterior' (a "
                f"torch Distribution) or 'z' (samples), got {group!r}"
            )
    return groups


def _has_moments(posterior: Distribution) -> bool:
    """Whether ``posterior`` gives its mean and variance in closed form (a flow gives neither)."""
    try:
        posterior.mean, posterior.variance  # noqa: B018 - a probe
    except NotImplementedError:
        return False
    return True


def _one_sample(z: Any) -> Tensor | None:
    return first_sample(z).detach() if isinstance(z, Tensor) else None


class GroupStatistics:
    """Active units, KL per dimension and I(x; z) of one latent group over an evaluation run.

    Args:
        name: The group's name.
        first: Whether it is the first (top) group, whose prior is unconditional.
        activity_threshold: Variance of the posterior mean above which a unit is active.
        mc_samples: Draws per example for posterior means without a closed form.
    """

    def __init__(self, name: str, first: bool, activity_threshold: float, mc_samples: int) -> None:
        self.name, self.first, self.mc_samples = name, first, mc_samples
        self.kl_per_dim = KLPerDimension()
        self.active_units = ActiveUnits(threshold=activity_threshold)
        self.mutual_info = MutualInformation()
        #: How each quantity is obtained (decided at the first batch): ``active_units``, ``kl_per_dim``,
        #: ``mutual_info`` -> an estimator's name, or ``None`` when skipped.
        self.estimators: dict[str, str | None] | None = None
        self.notes: list[str] = []
        self.dim: int | None = None
        self._told = False

    def metrics(self) -> list[Any]:
        return [self.kl_per_dim, self.active_units, self.mutual_info]

    def start(self, device: torch.device) -> None:
        """Reset the metrics and place them on ``device`` (also the ones created after the module moved)."""
        for metric in self.metrics():
            metric.reset()
            metric.to(device)

    # ------------------------------------------------------------------ collection
    def _decide(self, posterior: Distribution | None, kl: Any) -> dict[str, str | None]:
        kind = type(posterior).__name__
        moments = posterior is not None and _has_moments(posterior)
        if moments:
            active = _CLOSED_FORM
        elif posterior is not None:
            active = _SAMPLED
            self.notes.append(
                f"active units from posterior means estimated with {self.mc_samples} samples per example, their "
                f"Monte Carlo variance subtracted ({kind} has no closed-form mean and variance)"
            )
        else:
            active = _SAMPLES
            self.notes.append(
                "active units from the variance of the samples z over the data (no per-example posterior is given; "
                "an upper bound, since it adds the posterior's own variance)"
            )
        if isinstance(kl, Tensor):
            kl_from: str | None = "given"
        elif moments and self.first:
            kl_from = "standard normal"
            self.notes.append(
                "KL per dimension of each posterior marginal N(mean, variance) to N(0, 1) (the outputs give none; "
                "exact under a standard normal prior only)"
            )
        else:
            kl_from = None
            why = (
                f"{kind} has no per-dimension KL in closed form"
                if posterior is not None
                else "no per-example posterior is given"
            )
            self.notes.append(f"KL per dimension skipped ({why})")
        return {"active_units": active, "kl_per_dim": kl_from, "mutual_info": "He et al. 2019"}

    def update(self, group: Mapping[str, Any]) -> None:
        """Add one batch of the group's outputs ``{"posterior", "z", "kl_per_dim"}``."""
        posterior = group.get("posterior")
        posterior = posterior if isinstance(posterior, Distribution) else None
        z, kl = _one_sample(group.get("z")), group.get("kl_per_dim")
        first_batch = self.estimators is None
        if self.estimators is None:
            self.estimators = self._decide(posterior, kl)
        how = self.estimators
        if how["active_units"] == _CLOSED_FORM:
            assert posterior is not None
            mean = posterior.mean.detach()
            if mean.dim() != 2:
                raise ValueError(
                    f"Expected the posterior of group {self.name!r} to have batch shape (B,) and event shape (D,), "
                    f"got mean {tuple(mean.shape)}"
                )
            self.active_units.update(mean)
        elif how["active_units"] == _SAMPLED:
            assert posterior is not None
            with torch.no_grad():
                means, noise = sampled_means(posterior.sample((self.mc_samples,)))
            self.active_units.update(means, noise)
        else:
            if z is None:
                raise TypeError(f"PosteriorCollapseMonitor needs the samples 'z' of group {self.name!r}, got none")
            self.active_units.update(z)
        if self.dim is None:
            self.dim = int(self.active_units.means[-1].shape[-1])
        if how["kl_per_dim"] == "given" and isinstance(kl, Tensor):
            self.kl_per_dim.update(kl.detach(), batch_size=_rows(posterior, z))
        elif how["kl_per_dim"] == "standard normal":
            assert posterior is not None
            self.kl_per_dim.update(kl_to_standard_normal(posterior.mean.detach(), posterior.variance.detach()))
        if how["mutual_info"] is not None and posterior is not None:
            try:
                self.mutual_info.update(posterior, z)
            except (ValueError, NotImplementedError) as err:
                if not first_batch:
                    raise
                how["mutual_info"] = None
                self.notes.append(
                    f"mutual information skipped (the estimator of He et al. 2019 needs q(z|x) at other examples' "
                    f"samples, which {type(posterior).__name__} cannot give: {type(err).__name__})"
                )
        elif first_batch and how["mutual_info"] is not None:
            how["mutual_info"] = None
            self.notes.append("mutual information skipped (no per-example posterior is given)")
        if first_batch and self.notes and not self._told:
            self._told = True
            rank_zero_info(f"PosteriorCollapseMonitor: group {self.name!r}: " + "; ".join(self.notes))

    # ------------------------------------------------------------------ results
    @property
    def updated(self) -> bool:
        return bool(self.active_units.update_called)

    def compute(self, kl_threshold: float) -> dict[str, Any]:
        """``{"active_units", "mutual_info", "collapsed_dims", "kl_per_dim", "latent_dim"}``; ``None`` where skipped."""
        how = self.estimators or {}
        kl = self.kl_per_dim.compute().float().cpu() if how.get("kl_per_dim") else None
        return {
            "active_units": int(self.active_units.compute()),
            "mutual_info": float(self.mutual_info.compute()) if how.get("mutual_info") else None,
            "collapsed_dims": None if kl is None else int(count_collapsed(kl, kl_threshold)),
            "kl_per_dim": kl,
            "latent_dim": int(self.dim or 0),
        }


def _rows(posterior: Distribution | None, z: Tensor | None) -> int:
    """The batch size of a group's outputs: its posterior's batch shape, or its samples'."""
    if posterior is not None and len(posterior.batch_shape) == 1:
        return int(posterior.batch_shape[0])
    if z is None:
        raise ValueError("PosteriorCollapseMonitor cannot tell the batch size of a group without a posterior or 'z'")
    return int(z.shape[0])


def totals(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The values over all groups: sums of the counts and of the mutual information, the KL of every dimension."""
    with_kl = [(name, g) for name, g in groups.items() if g["kl_per_dim"] is not None]
    with_mi = [g["mutual_info"] for g in groups.values() if g["mutual_info"] is not None]
    return {
        "active_units": sum(g["active_units"] for g in groups.values()),
        "mutual_info": sum(with_mi) if with_mi else None,
        "collapsed_dims": sum(g["collapsed_dims"] for _, g in with_kl) if with_kl else None,
        "latent_dim": sum(g["latent_dim"] for g in groups.values()),
        "kl_dim": sum(g["kl_per_dim"].numel() for _, g in with_kl),
        "kl_per_dim": torch.cat([g["kl_per_dim"] for _, g in with_kl]) if with_kl else None,
        "kl_groups": [(name, int(g["kl_per_dim"].numel())) for name, g in with_kl],
        "units": ""
        if len(groups) == 1
        else ", ".join(f"{n} {g['active_units']}/{g['latent_dim']}" for n, g in groups.items()),
    }


def collapse_message(monitor: Any, values: Mapping[str, Any], at_end: bool = False) -> str:
    """The warning of ``monitor`` (a PosteriorCollapseMonitor) on collapse, from its last check's ``values``.

    ``at_end``: the run ended with collapse in its last checks, fewer of them than ``patience``.
    """
    d, mi, collapsed = values["latent_dim"], values["mutual_info"], values["collapsed_dims"]
    mi_text = "not estimated" if mi is None else f"{mi:.3f} nats"
    kl_text = f"{collapsed}/{values['kl_dim']} dimensions with KL < {monitor.kl_threshold:g} nats. "
    kl_text = "" if collapsed is None else kl_text
    units = f"{values['units']}; " if values.get("units") else ""  # several groups: each group's count
    checks = monitor.collapsed_checks
    when = (
        f"Posterior collapse at the end of training: the last {checks} validation check{'s' if checks > 1 else ''} "
        f"(fewer than patience={monitor.patience}, so not reported during the run) found"
        if at_end
        else f"Posterior collapse: for {checks} validation checks in a row"
    )
    return (
        f"{when} the posterior carried almost no information about x. Last check: "
        f"{values['active_units']}/{d} active units ({units}"
        f"posterior-mean variance > {monitor.activity_threshold:g}; collapse below {monitor.min_active_units}), "
        f"I(x; z) = {mi_text} (collapse below {monitor.min_mutual_info:g}), {kl_text}Remedies in "
        "lightning-vae: free bits (VAE(free_bits=...) or the FreeBits callback), cyclical KL annealing (the "
        "KLAnnealing callback), aggressive encoder training (the AggressiveEncoderTraining callback); a weaker "
        "decoder also helps." + (" Stopping training (stop_on_collapse=True)." if monitor.stop_on_collapse else "")
    )
