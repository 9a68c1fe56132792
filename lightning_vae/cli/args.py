"""The command line as LightningCLI gets it: shipped config names resolved, the checkpoint's data module added."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import yaml

from lightning_vae import configs as shipped
from lightning_vae.cli.record import recorded_run_args
from lightning_vae.cli.runs import checkpoint_data_config

#: LightningCLI's subcommands; the ones that evaluate a checkpoint can take their data from it.
SUBCOMMANDS = ("fit", "validate", "test", "predict")
EVALUATION = ("validate", "test", "predict")


class CLIError(ValueError):
    """A command line that cannot run; the message says what to pass instead."""


def yaml_problem(path: str | os.PathLike) -> str | None:
    r"""What is wrong with the YAML file ``path`` (``None`` when it parses), naming the file, line and column.

    Example::

        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        ...     _ = f.write("model:\n  beta: [1, 2\n")
        >>> yaml_problem(f.name).endswith("line 3, column 1)")
        True
    """
    try:
        with open(path) as f:
            yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{str(path)!r} is not valid YAML ({problem}{where})"
    except UnicodeDecodeError as err:
        return f"{str(path)!r} is not a text file ({err})"
    return None


def _option_value(args: Sequence[str], names: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def _data_class_set_by(args: list[str], i: int) -> str | None:
    """The data-module class that ``args[i]`` (with its value) selects, if it selects one."""
    arg = args[i]
    value = None
    for flag in ("--data", "--data.class_path", "--config", "-c"):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"{flag}="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if flag in ("--config", "-c"):
            try:
                with open(value) as f:
                    content = yaml.safe_load(f)
            except (OSError, yaml.YAMLError):
                return None
            data = content.get("data") if isinstance(content, dict) else None
            value = data.get("class_path") if isinstance(data, dict) else data
            return str(value) if isinstance(value, str) else None
        if value.lstrip().startswith("{") or value in ("null", "None", ""):
            return None
        return value
    return None


def _fresh_data_on_class_change(args: list[str]) -> list[str]:
    """Insert ``--data=null`` where the data-module class changes, so the new class starts from its own defaults.

    jsonargparse would carry the earlier class's arguments over to the new one where the names match (a
    ``batch_size`` of the shapes config would become your data module's ``batch_size``).
    """
    out: list[str] = []
    current: str | None = None
    for i, arg in enumerate(args):
        selected = _data_class_set_by(args, i)
        if selected is not None:
            if current is not None and selected.rsplit(".", 1)[-1] != current.rsplit(".", 1)[-1]:
                out.append("--data=null")
            current = selected
        out.append(arg)
    return out


def prepare_args(args: Sequence[str]) -> list[str]:
    """Rewrite a command line before LightningCLI parses it.

    - ``--config NAME`` names a shipped config when ``NAME`` is not a file (``shapes``, ``annealing/cyclical``,
      or ``configs/cli/shapes.yaml`` run from outside a checkout);
    - ``validate``/``test``/``predict`` with ``--ckpt_path`` and neither ``--config`` nor ``--data`` get the data
      module the checkpoint was trained on (``--data.init_args.KEY=VALUE`` still overrides its arguments) and,
      for a checkpoint of ``lightning-vae fit``, its seed, run folder, callbacks and loggers
      (:mod:`~lightning_vae.cli.record`; what the command line sets wins);
    - a data-module class given after a config (or a later config) for another class starts from its own
      defaults, not from the earlier class's arguments.

    Raises:
        CLIError: If a ``--config`` names nothing or is not valid YAML (naming the file, line and column), or the
            checkpoint cannot be read.

    Example::

        >>> prepare_args(["fit", "--config", "shapes"])[2].endswith("shapes.yaml")
        True
    """
    out = list(args)
    try:
        for i, arg in enumerate(out):
            for flag in ("--config", "-c"):
                if arg == flag and i + 1 < len(out):
                    out[i + 1] = str(shipped.resolve(out[i + 1]))
                    problem = yaml_problem(out[i + 1])
                elif arg.startswith(f"{flag}="):
                    out[i] = f"{flag}={shipped.resolve(arg.split('=', 1)[1])}"
                    problem = yaml_problem(out[i].split("=", 1)[1])
                else:
                    continue
                if problem is not None:
                    raise CLIError(f"lightning-vae: --config {problem}")
        subcommand = next((a for a in out if a in SUBCOMMANDS), None)
        ckpt = _option_value(out, ["--ckpt_path"])
        has_config = _option_value(out, ["--config", "-c"]) is not None
        has_data = any(a == "--data" or a.startswith(("--data=", "--data.class_path")) for a in out)
        if subcommand in EVALUATION and ckpt and not has_config and not has_data:
            spec = checkpoint_data_config(ckpt)
            position = out.index(subcommand) + 1
            if spec is not None:
                out.insert(position, f"--data={json.dumps(spec, default=str)}")
            out[position:position] = recorded_run_args(ckpt, out)  # the run's seed, folder, callbacks, loggers
        out = _fresh_data_on_class_change(out)
    except CLIError:
        raise
    except ValueError as err:
        raise CLIError(str(err)) from err
    return out


__all__ = ["EVALUATION", "SUBCOMMANDS", "CLIError", "prepare_args", "yaml_problem"]
