"""The ``lightning-vae-hydra`` command: compose the Hydra tree shipped in ``lightning_vae/configs/hydra``, instantiate,
fit.

Examples::

    lightning-vae-hydra                                   # train.yaml: conv VAE on shapes
    lightning-vae-hydra experiment=mnist_mlp trainer.max_epochs=2
    lightning-vae-hydra -m model.beta=1,4,8               # one job, one TensorBoard folder per value
    python -m lightning_vae.cli.hydra debug=fdr               # the same entry point without the console script

Where the configs come from, first match wins:

1. ``--config-dir DIR`` (``-cd``) on the command line (Hydra's own flag; ``DIR`` holds ``train.yaml``);
2. the environment variable ``LIGHTNING_VAE_CONFIG_DIR``;
3. the configs shipped in the package, ``pkg://lightning_vae.configs.hydra`` (the same files as ``configs/hydra/`` of a
   source checkout). ``lightning-vae configs --copy DIR`` copies them for editing; then use 1. or 2.

Outputs go under ``logs/<task_name>/`` of the directory the command starts in (``$LIGHTNING_VAE_LOG_DIR``
instead when set).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from omegaconf import DictConfig

from lightning_vae.cli.runs import entry_point_callbacks, pin_logger_versions, summarize

#: Environment variable naming a config directory (one that holds ``train.yaml``).
CONFIG_DIR_ENV = "LIGHTNING_VAE_CONFIG_DIR"
#: Name of the primary config inside the config directory.
CONFIG_NAME = "train"


def find_config_dir() -> str:
    """Where Hydra reads the configs: ``$LIGHTNING_VAE_CONFIG_DIR`` if set, else the shipped configs.

    Returns an absolute directory, or the search-path URL ``pkg://lightning_vae.configs.hydra``.

    Raises:
        ValueError: If ``LIGHTNING_VAE_CONFIG_DIR`` is set but holds no ``train.yaml``.

    Example::

        >>> import os
        >>> find_config_dir() if CONFIG_DIR_ENV not in os.environ else "pkg://lightning_vae.configs.hydra"
        'pkg://lightning_vae.configs.hydra'
    """
    from lightning_vae.configs import HYDRA_SEARCH_PATH

    primary = f"{CONFIG_NAME}.yaml"
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        path = Path(env).expanduser().resolve()
        if not (path / primary).is_file():
            raise ValueError(f"Expected {CONFIG_DIR_ENV}={env!r} to be a directory holding {primary}, got none there")
        return str(path)
    return HYDRA_SEARCH_PATH


def instantiate_group(config: Mapping[str, Any] | None, kind: type, name: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``.

    ``None`` entries are skipped, and so (with a warning) are entries without ``_target_``: settings
    left behind for an object whose config was not selected.

    Raises:
        TypeError: If the group or an entry is not a mapping, or an entry builds something that is not a ``kind``.
    """
    from hydra.utils import instantiate

    if not config:
        return []
    if not isinstance(config, Mapping):
        raise TypeError(f"Expected `{name}` to be a mapping of name -> config with `_target_`, got {config!r}")
    objects = []
    for key, entry in config.items():
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise TypeError(f"Expected `{name}.{key}` to be a config with `_target_`, got {entry!r}")
        if "_target_" not in entry:
            # Settings for an entry whose config is not selected (e.g. an experiment tuning a callback that a
            # `callbacks=...` override left out): nothing to build.
            rank_zero_warn(f"`{name}.{key}` has settings {dict(entry)} but no `_target_`; skipped")
            continue
        obj = instantiate(entry)
        if not isinstance(obj, kind):
            raise TypeError(f"Expected `{name}.{key}` to build a {kind.__name__}, got {type(obj).__name__}")
        objects.append(obj)
    return objects


def train(cfg: DictConfig) -> dict[str, float]:
    """Instantiate data, model, callbacks, loggers and trainer from a composed config; fit (and test).

    Returns the trainer's final scalar metrics (``val/elbo``, ``train/loss``, ...) as floats.

    Raises:
        TypeError: If ``data``, ``model`` or a callback/logger entry builds the wrong kind of object.
    """
    from hydra.utils import instantiate

    if cfg.get("seed") is not None:
        seed_everything(int(cfg.seed), workers=True)
    datamodule = instantiate(cfg.data)
    if not isinstance(datamodule, LightningDataModule):
        raise TypeError(f"Expected `data` to build a LightningDataModule, got {type(datamodule).__name__}")
    model = instantiate(cfg.model)
    if not isinstance(model, LightningModule):
        raise TypeError(f"Expected `model` to build a LightningModule, got {type(model).__name__}")
    callbacks = instantiate_group(cfg.get("callbacks"), Callback, "callbacks")
    if cfg.trainer.get("fast_dev_run"):
        # Lightning's ModelCheckpoint still writes last.ckpt at the end of a fast_dev_run: a debug run writes none.
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    callbacks.extend(entry_point_callbacks())
    loggers = instantiate_group(cfg.get("logger"), Logger, "logger")
    trainer: Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if cfg.get("train", True):
        pin_logger_versions(trainer)
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = _scalars(trainer)
    if cfg.get("test", False):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if cfg.get("train", True) else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or cfg.get("ckpt_path"))
        metrics.update(_scalars(trainer))
    if trainer.is_global_zero:
        print(summarize(trainer), flush=True)
    return metrics


def _scalars(trainer: Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _task(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name not in metrics:
        raise ValueError(
            f"Expected `optimized_metric` to name one of the final metrics {sorted(metrics)}, got {name!r}"
        )
    rank_zero_info(f"{name} = {metrics[name]:.4f}")
    return metrics[name]


def _has_config_dir_flag(argv: Sequence[str]) -> bool:
    return any(a in ("--config-dir", "-cd") or a.startswith(("--config-dir=", "-cd=")) for a in argv)


def main() -> None:
    """Console-script entry point of ``lightning-vae-hydra``."""
    import hydra

    # Hydra searches its primary config path before --config-dir; with the flag, the flag's directory is the one used.
    if _has_config_dir_flag(sys.argv[1:]):
        config_path = None
    else:
        try:
            config_path = find_config_dir()
        except ValueError as err:
            sys.exit(f"lightning-vae-hydra: {err}")
    hydra.main(version_base="1.3", config_path=config_path, config_name=CONFIG_NAME)(_task)()


if __name__ == "__main__":
    main()
