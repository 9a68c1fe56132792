"""The training layer: the LightningModule (:class:`VAE`), its evaluation metrics and its fault policy.

- :mod:`~lightning_vae.training.module`: ``VAE``, one class: construction, the steps, logging, hooks, checkpoints;
- :mod:`~lightning_vae.training.metrics`: the ``val/...`` and ``test/...`` means, exact under DDP;
- :mod:`~lightning_vae.training.faults`: the non-finite policy, the data checks, the strategy check.

The model it trains lives in :mod:`lightning_vae.models` and the loss in :mod:`lightning_vae.objective`; nothing
there imports from here.
"""

from lightning_vae.training.faults import DataCheck, NonFiniteError, NonFiniteGuard, NonFinitePolicy
from lightning_vae.training.metrics import EvalMetrics
from lightning_vae.training.module import VAE, VAEOutput

__all__ = ["VAE", "DataCheck", "EvalMetrics", "NonFiniteError", "NonFiniteGuard", "NonFinitePolicy", "VAEOutput"]
