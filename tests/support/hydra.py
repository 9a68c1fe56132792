"""Helpers of the Hydra tests: compose the repository's configs/ as the entry point does, list the options."""

from __future__ import annotations

import inspect
import os
import sys
from argparse import Namespace
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("hydra", reason="needs hydra-core (a GPU check may run without it)")

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from lightning_vae.building import describe  # noqa: E402
from support.paths import MNIST_DIR, ROOT  # noqa: E402

CONFIG_DIR = ROOT / "configs" / "hydra"
#: Overrides that keep a run small: a few hundred shapes, a subset of MNIST from the real files.
SMALL_SHAPES = ["data.n_train=256", "data.n_val=128", "data.batch_size=64"]


def small_mnist() -> list[str]:
    return [f"data.data_dir={MNIST_DIR}", "data.train_subset=256", "data.val_size=128", "data.batch_size=64"]


def compose_cfg(overrides: Iterable[str], tmp_path: Path) -> DictConfig:
    """Compose ``train.yaml`` with ``overrides`` as a run would, writing under ``tmp_path``."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
    return cfg


def options(group: str) -> list[str]:
    """The option names of a config group (the YAML files of ``configs/<group>/``)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def needs_mnist(cfg: DictConfig) -> bool:
    return "MNIST" in str(cfg.data.get("_target_", ""))


def lightning_cli_configs() -> dict[str, Path]:
    """LightningCLI YAMLs at the top of configs/cli/ (``model`` and ``trainer`` sections, no Hydra ``defaults``)."""
    import yaml

    found = {}
    for path in sorted((CONFIG_DIR.parent / "cli").glob("*.yaml")):
        content = yaml.safe_load(path.read_text())
        if isinstance(content, dict) and "model" in content and "trainer" in content and "defaults" not in content:
            found[path.stem] = path
    return found


# ---------------------------------------------------------------------------------------- canonical views
def plain(value: Any) -> Any:
    """Builtins only: Namespaces and mappings to dicts, tuples to lists, OmegaConf nodes resolved."""
    if isinstance(value, (DictConfig,)) or OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def import_class(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    __import__(module_name)
    return getattr(sys.modules[module_name], name)


def canonical_spec(class_path: str, init_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"class": module.QualName, "args": every constructor argument with defaults filled}``."""
    cls = import_class(class_path)
    bound = inspect.signature(cls).bind(**dict(init_args or {}))
    bound.apply_defaults()
    args = {
        name: canonical_spec(value["class_path"], value.get("init_args"))
        if isinstance(value, Mapping) and "class_path" in value
        else value
        for name, value in plain(dict(bound.arguments)).items()
    }  # nested networks (a model's encoder) compared the same way
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "args": args}


def model_view(model: Any) -> dict[str, Any]:
    """What defines a VAE: its hyperparameters (networks as canonical specs) and the optimizer it builds."""
    view = {
        k: plain(v)
        for k, v in model.hparams.items()
        if not k.startswith("_") and k not in ("optimizer", "lr_scheduler")
    }
    built = describe(getattr(model, "model", None)) if view.get("model") is not None else None
    if built is not None:  # a latent-variable model: what it recorded once built (its sizes fixed)
        view["model"] = built
    for name in ("encoder", "decoder", "likelihood", "prior", "model", "objective"):
        spec = view.get(name)
        if isinstance(spec, dict) and "class_path" in spec:
            view[name] = canonical_spec(spec["class_path"], spec.get("init_args"))
    built = model.configure_optimizers()
    if isinstance(built, list):  # an objective with optimizers of its own: the model's first, then those
        optimizer, *own = built
        view["objective_optimizers"] = [{"class": type(o).__qualname__, "defaults": plain(o.defaults)} for o in own]
    else:
        optimizer = built["optimizer"] if isinstance(built, dict) else built
    scheduler = built.get("lr_scheduler") if isinstance(built, dict) else None
    view["optimizer"] = {"class": type(optimizer).__qualname__, "defaults": plain(optimizer.defaults)}
    view["lr_scheduler"] = None if scheduler is None else type(scheduler["scheduler"]).__qualname__
    return view


def data_view(datamodule: Any) -> dict[str, Any]:
    cls = type(datamodule)
    hparams = {k: plain(v) for k, v in datamodule.hparams.items() if not k.startswith("_")}
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "hparams": hparams}


def trainer_view(trainer: Any) -> dict[str, Any]:
    return {
        "accelerator": type(trainer.accelerator).__name__,
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "precision": trainer.precision,
        "gradient_clip_val": trainer.gradient_clip_val,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "check_val_every_n_epoch": trainer.check_val_every_n_epoch,
        "log_every_n_steps": trainer.log_every_n_steps,
    }


#: Callbacks that only draw or export (presentation); every other lightning_vae callback changes or measures
#: training and must be the same in both configs. By class name, wherever the class is defined.
VIEW_CALLBACKS = (
    "ReconstructionLogger",
    "PriorSampleLogger",
    "LatentTraversalLogger",
    "LatentEmbeddingLogger",
    "TensorBoardDashboard",
    "PosteriorMeanWriter",
)


def is_training_callback(class_path: str) -> bool:
    cls = import_class(class_path)
    return cls.__module__.startswith("lightning_vae.callbacks") and cls.__name__ not in VIEW_CALLBACKS


def training_callbacks(specs: Iterable[tuple[str, Mapping[str, Any] | None]]) -> list[dict[str, Any]]:
    found = [canonical_spec(path, args) for path, args in specs if is_training_callback(path)]
    return sorted(found, key=lambda s: (s["class"], repr(s["args"])))


def env_without_config_dir() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LIGHTNING_VAE_CONFIG_DIR", None)
    env["PYTHONWARNINGS"] = "ignore"
    return env
