"""Checkpoint hooks of the training module (a mixin): what a checkpoint records, and safe loading."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import LightningModule

from lightning_vae.building import check_checkpoint_classes, load_checkpoint, migrate_state_dict
from lightning_vae.guard import NonFiniteGuard
from lightning_vae.models.base import LatentVariableModel


class CheckpointHooks(LightningModule):
    """Refuses non-finite weights, records sizes and annealed values, loads checkpoints weights-only."""

    guard: NonFiniteGuard
    model: LatentVariableModel
    beta: float
    _beta: float
    free_bits: float
    capacity: float | None
    group_betas: dict[str, float]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write non-finite weights or optimizer state; record the sizes, annealed values and the
        divergence rule's scale a reloaded model needs."""
        self.guard.flush(self)
        self.guard.check_parameters(self)
        self.guard.check_optimizer_states(checkpoint)
        shape = self.model.data_shape
        checkpoint["lightning_vae"] = {
            "latent_dim": getattr(self.model, "latent_dim", None),
            "data_shape": None if shape is None else list(shape),
            "beta": self.beta,
            "free_bits": self.free_bits,
            "capacity": self.capacity,
            "group_betas": dict(getattr(self, "group_betas", {})),
            "guard": self.guard.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        migrate_state_dict(checkpoint)
        state = checkpoint.get("lightning_vae") or {}
        prior = getattr(self.model, "prior", None)
        if state.get("latent_dim") is not None and getattr(prior, "latent_dim", 0) is None:
            prior.latent_dim = int(state["latent_dim"])  # type: ignore[union-attr]
        if state.get("data_shape") is not None and self.model.data_shape is None:
            self.model.data_shape = tuple(int(d) for d in state["data_shape"])
        if "beta" in state:
            self._beta = float(state["beta"])
            self.free_bits = float(state["free_bits"])
            self.capacity = None if state["capacity"] is None else float(state["capacity"])
            self.group_betas = {str(k): float(v) for k, v in (state.get("group_betas") or {}).items()}
        if isinstance(state.get("guard"), dict):
            self.guard.load_state_dict(state["guard"])

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load a ``VAE`` from a checkpoint file, refusing hostile or corrupt files before anything runs.

        The file is read with ``torch.load(weights_only=True)``; every class its hyperparameters name must be a
        network, ``Likelihood``, ``Prior``, optimizer or scheduler class, checked before any is called
        (:func:`lightning_vae.building.check_checkpoint_classes`). Networks passed as keyword arguments replace
        the recorded ones.

        Raises:
            ValueError: For a missing, empty, truncated or non-checkpoint file, or a refused class, naming the file.
        """
        checkpoint = load_checkpoint(checkpoint_path)
        hparams = {k: v for k, v in (checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {}).items() if k not in kwargs}
        check_checkpoint_classes(hparams, source=str(checkpoint_path))
        try:
            return super().load_from_checkpoint(  # type: ignore[return-value]
                str(checkpoint_path),
                map_location=map_location,
                hparams_file=None if hparams_file is None else str(hparams_file),
                strict=strict,
                weights_only=True,
                **kwargs,
            )
        except RuntimeError as err:
            if any(s in str(err) for s in ("size mismatch", "Missing key", "Unexpected key")):
                raise ValueError(
                    f"The weights in {str(checkpoint_path)!r} do not fit the networks built for them (wrong shape "
                    f"for this network?): {err}"
                ) from err
            raise


__all__ = ["CheckpointHooks"]
