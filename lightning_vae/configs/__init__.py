"""The YAML configs shipped with the package, in two folders named after what reads them.

- ``cli/``: LightningCLI configs, one file per setting (``lightning-vae fit --config shapes`` finds
  ``cli/shapes.yaml`` by its short name; ``annealing/`` holds the annealing variants);
- ``hydra/``: the Hydra tree (``train.yaml`` and its groups ``data/``, ``model/``, ``experiment/``, ...), found as
  ``pkg://lightning_vae.configs.hydra`` by ``lightning-vae-hydra``.

``lightning-vae configs --copy DIR`` copies both for editing. In a source checkout, the top-level ``configs/``
folder is a link to this one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

#: Hydra's search-path URL of the Hydra tree.
HYDRA_SEARCH_PATH = "pkg://lightning_vae.configs.hydra"

#: The folders of the two kinds of config, under :func:`packaged_dir`.
CLI_FOLDER, HYDRA_FOLDER = "cli", "hydra"


def packaged_dir() -> Path:
    """The folder holding the shipped YAML files.

    Example::

        >>> (packaged_dir() / "hydra" / "train.yaml").is_file(), (packaged_dir() / "cli" / "shapes.yaml").is_file()
        (True, True)
    """
    return Path(__file__).resolve().parent


def _is_lightning_cli_config(path: Path) -> bool:
    try:
        text = path.read_text()
        content = yaml.safe_load(text)
    except (OSError, yaml.YAMLError):
        return False
    if "@package" in text:  # a Hydra file
        return False
    if not isinstance(content, dict) or "defaults" in content or "_target_" in content:
        return False
    return bool({"model", "trainer", "data"} & set(content))


def lightning_cli_configs() -> list[str]:
    """Short names of the shipped LightningCLI configs (``shapes``, ``annealing/cyclical``, ...).

    Example::

        >>> names = lightning_cli_configs()
        >>> "shapes" in names and "mnist_mlp" in names and "annealing/cyclical" in names
        True
    """
    root = packaged_dir() / CLI_FOLDER
    found = []
    for path in sorted(root.rglob("*.yaml")):
        if _is_lightning_cli_config(path):
            found.append(path.relative_to(root).with_suffix("").as_posix())
    return found


def resolve(name: str | os.PathLike) -> Path:
    """The config file ``name`` names: an existing file, else a shipped config by short name.

    ``shapes``, ``shapes.yaml``, ``cli/shapes.yaml`` and ``configs/cli/shapes.yaml`` (the path in a source
    checkout, also when run from another folder) all name the shipped ``cli/shapes.yaml``.

    Raises:
        ValueError: If ``name`` is neither a file nor a shipped config; the message lists the shipped ones.

    Example::

        >>> resolve("shapes").name, resolve("configs/cli/annealing/cyclical.yaml").parent.name
        ('shapes.yaml', 'annealing')
    """
    given = Path(name).expanduser()
    if given.is_file():
        return given
    root = packaged_dir() / CLI_FOLDER
    relative = given.as_posix()
    for prefix in ("configs/", f"{CLI_FOLDER}/"):
        if relative.startswith(prefix):
            relative = relative[len(prefix) :]
    for candidate in (root / relative, root / f"{relative}.yaml"):
        if candidate.is_file() and candidate.resolve().is_relative_to(root):
            return candidate
    raise ValueError(
        f"Expected `--config` to be a YAML file or the name of a shipped config, got {str(name)!r} (no such file). "
        f"Shipped configs: {', '.join(lightning_cli_configs())}"
    )


def copy_to(target: str | os.PathLike, force: bool = False) -> Path:
    """Copy the shipped configs (LightningCLI and Hydra) to the folder ``target``, for editing; return it.

    Raises:
        ValueError: If ``target`` exists and is not empty, unless ``force`` (then files of the same name are
            overwritten and others kept).
    """
    destination = Path(target).expanduser()
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"Expected `--copy` to name a folder, got the file {str(target)!r}")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise ValueError(f"{str(target)!r} exists and is not empty; name a new folder, or pass --force to overwrite")
    shutil.copytree(
        packaged_dir(),
        destination,
        ignore=shutil.ignore_patterns("__init__.py", "__pycache__", "*.pyc"),
        dirs_exist_ok=True,
    )
    return destination
