"""Flow posteriors: planar flows and inverse autoregressive flows on top of a Gaussian base posterior.

:class:`FlowPosterior` pushes a base posterior's samples through :class:`Flow` maps and keeps their exact
log-density by the change of variables; :class:`PlanarFlow` and :class:`IAFStep` are the maps.
"""

from lightning_vae.distributions.flows.base import Flow, FlowPosterior, apply_flows
from lightning_vae.distributions.flows.iaf import IAFStep, iaf_steps
from lightning_vae.distributions.flows.planar import PlanarFlow

__all__ = ["Flow", "FlowPosterior", "IAFStep", "PlanarFlow", "apply_flows", "iaf_steps"]
