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
from lightning_vae.targets import check_config

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
        ValueError: If the config names a class or callable that does not fit its slot (see
            :func:`lightning_vae.targets.check_config`), before anything is built.
        TypeError: If ``data``, ``model`` or a callback/logger entry builds the wrong kind of object.
    """
    from hydra.utils import instantiate

    # Every class and callable the config names, resolved against its slot before anything is built or called.
    check_config(cfg, "the config", where=_choices_of(cfg))
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
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = _scalars(trainer)
    if cfg.get("test", False):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if cfg.get("train", True) else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or cfg.get("ckpt_path"), weights_only=True)
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


def _choices_of(cfg: Any) -> Any:
    """``where(path)`` for :func:`~lightning_vae.targets.check_config`: the config group options behind a key."""
    from omegaconf import OmegaConf

    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None) if OmegaConf.is_config(cfg) else None
    if not choices:
        try:
            from hydra.core.hydra_config import HydraConfig

            choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else None
        except ValueError:
            choices = None
    found = {str(k): str(v) for k, v in (choices or {}).items() if v is not None}

    def where(path: Sequence[str | int]) -> str:
        keys = "/".join(str(k) for k in path if not isinstance(k, int))
        groups = sorted(g for g in found if keys == g or keys.startswith(f"{g}/"))
        experiment = found.get("experiment")
        named = [f"{g}={found[g]} ({g}/{found[g]}.yaml)" for g in groups]
        if experiment is not None:
            named.append(f"experiment={experiment} (experiment/{experiment}.yaml)")
        return f" [config group options: {', '.join(named)}]" if named else ""

    return where


def _first_values(overrides: Sequence[str]) -> list[str]:
    """The overrides with each sweep (``a=1,2``, ``range(...)``) replaced by its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    prefixes = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}
    out = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            out.append(f"{prefixes.get(override.type, '')}{override.get_key_element()}={first}")
        else:
            out.append(override.input_line or "")
    return out


def preflight(argv: Sequence[str], config_path: str | None) -> None:
    """Compose the config a ``lightning-vae-hydra`` command line selects and check it before Hydra runs anything.

    Hydra instantiates the ``hydra.callbacks``, the launcher and the sweeper and applies the logging configs
    before the task starts; :func:`~lightning_vae.targets.check_config` resolves every class and callable the
    composed config names (those of the task too) against its slot first. Sweeps are composed with their first
    value (each job's config is checked again by :func:`train`). ``--experimental-rerun`` (which unpickles a
    file) is refused.

    Raises:
        ValueError: For a refused class or callable, naming the key and the config group options behind it.
    """
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra._internal.utils import get_args_parser  # Hydra's own command-line parser: the same reading of argv

    args = get_args_parser().parse_args(list(argv))
    if getattr(args, "experimental_rerun", None):
        raise ValueError(
            f"--experimental-rerun {args.experimental_rerun}: Hydra's rerun unpickles that file, which runs any code "
            "it holds; refused. Rerun with the overrides in the run's .hydra/overrides.yaml instead"
        )
    if args.help or args.hydra_help or args.shell_completion or args.info is not None:
        return
    directory = args.config_dir if args.config_dir else (args.config_path or config_path)
    if directory is None:
        return
    name = args.config_name or CONFIG_NAME
    if str(directory).startswith("pkg://"):
        context: Any = initialize_config_module(str(directory)[len("pkg://") :], version_base="1.3")
    else:
        path = Path(str(directory).removeprefix("file://")).expanduser()
        if not path.is_absolute():
            path = (Path(__file__).parent / path) if args.config_path else path.resolve()
        context = initialize_config_dir(str(path.resolve()), version_base="1.3")
    with context:
        cfg = compose(name, overrides=_first_values(args.overrides), return_hydra_config=True)
    check_config(cfg, f"the config {name!r}", where=_choices_of(cfg))


def _hydra_main(argv: list[str]) -> None:
    import hydra

    sys.argv = [sys.argv[0], *argv]  # Hydra reads sys.argv (without --debug)
    # Hydra searches its primary config path before --config-dir; with the flag, the flag's directory is the one used.
    config_path = None if _has_config_dir_flag(argv) else find_config_dir()
    preflight(argv, config_path)
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; the command's handler reports the error in one line
    try:
        hydra.main(version_base="1.3", config_path=config_path, config_name=CONFIG_NAME)(_task)()
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def main() -> None:
    """Console-script entry point of ``lightning-vae-hydra``.

    An error ends the command with one line naming it (exit status 1, or 2 for a refused config); ``--debug`` or
    ``LIGHTNING_VAE_DEBUG=1`` shows the traceback instead.
    """
    from lightning_vae.cli.errors import run_command

    run_command("lightning-vae-hydra", _hydra_main, sys.argv[1:])


if __name__ == "__main__":
    main()
