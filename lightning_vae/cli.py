"""The ``lightning-vae`` command: LightningCLI over :class:`~lightning_vae.VAE` and any DataModule.

Examples::

    lightning-vae fit --config shapes                     # a shipped config, by name (or a path to your YAML)
    lightning-vae fit --config mnist_mlp --model.beta=4 --trainer.max_epochs=5
    lightning-vae test --ckpt_path logs/shapes/.../last.ckpt   # the data module recorded in the checkpoint
    lightning-vae configs --copy my_configs               # the shipped configs, to edit

After training (see :mod:`lightning_vae.generate`)::

    lightning-vae sample --ckpt_path last.ckpt --output samples.png
    lightning-vae reconstruct --ckpt_path last.ckpt --output reconstructions.png
    lightning-vae predict --ckpt_path last.ckpt \\
        --trainer.callbacks+=PosteriorMeanWriter --trainer.callbacks.output_path=latents.npy
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

import lightning_vae.callbacks  # noqa: F401 - makes `--trainer.callbacks+=KLAnnealing` (short class names) resolve
from lightning_vae import configs as shipped
from lightning_vae.module import VAE
from lightning_vae.runs import checkpoint_data_config, entry_point_callbacks, pin_logger_versions, summarize

__all__ = ["CLIError", "VAECLI", "build_cli", "main", "prepare_args", "summarize"]

#: LightningCLI's subcommands; the ones that evaluate a checkpoint can take their data from it.
SUBCOMMANDS = ("fit", "validate", "test", "predict")
EVALUATION = ("validate", "test", "predict")


class CLIError(ValueError):
    """A command line that cannot run; the message says what to pass instead."""


def _shipped_list() -> str:
    return ", ".join(n for n in shipped.lightning_cli_configs() if "/" not in n)


class VAECLI(LightningCLI):
    """LightningCLI over :class:`~lightning_vae.VAE` and any DataModule, with a summary printed after ``fit``.

    There is no default data module: the data come from ``--config`` (its ``data`` section), ``--data``, or, for
    ``validate``/``test``/``predict`` with ``--ckpt_path``, from the checkpoint (see :func:`prepare_args`).
    Every trainer gets :func:`~lightning_vae.runs.entry_point_callbacks` (validation at the last step of a run
    that ``max_steps`` ends inside an epoch; the run's progress for the summary).
    """

    def add_core_arguments_to_parser(self, parser: Any) -> None:
        """LightningCLI's arguments, with ``data`` optional so that a missing one gets the message below."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=True, required=False)

    def _parse_ckpt_path(self) -> None:
        super()._parse_ckpt_path()  # the model's arguments from the checkpoint, as LightningCLI does
        self._check_config()  # before the seed is set: the message is the first thing printed

    def add_arguments_to_parser(self, parser: Any) -> None:
        """A ``checkpoint`` section (Lightning's ``ModelCheckpoint``, ``save_last`` on) that configs set apart from
        ``trainer.callbacks``, so that a second ``--config`` replacing the callback list keeps it; with a fixed
        ``checkpoint.dirpath`` (as in the shipped configs), ``--ckpt_path=last`` resumes the run."""
        from lightning.pytorch.callbacks import ModelCheckpoint

        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})

    def before_instantiate_classes(self) -> None:
        self._check_config()

    def _check_config(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        command = f"lightning-vae {subcommand}" if subcommand else "lightning-vae"
        model = config.get("model")
        if model is None or model.get("encoder") is None or model.get("decoder") is None:
            if subcommand in EVALUATION:
                raise CLIError(
                    f"{command}: no model. Pass --ckpt_path CKPT (a checkpoint written by `lightning-vae fit`) and "
                    f"optionally --config NAME, e.g. `{command} --ckpt_path path/to/last.ckpt`"
                )
            raise CLIError(
                f"{command}: no model to train. Pass a config: `{command} --config shapes` (shipped configs: "
                f"{_shipped_list()}; `lightning-vae configs` lists them, `lightning-vae configs --copy DIR` copies "
                "them for editing), or your own YAML file; or give the networks and data on the command line: "
                "--model.encoder=CLASS --model.decoder=CLASS --data=CLASS"
            )
        if config.get("data") is None:
            ckpt = config.get("ckpt_path")
            where = (
                f"the checkpoint {ckpt} does not record its data module (it was not written by lightning-vae or "
                "lightning-vae-hydra)"
                if ckpt
                else "no data module was given"
            )
            raise CLIError(
                f"{command}: {where}. Pass --config NAME (a config with a `data` section, e.g. shapes) or "
                "--data=CLASS (e.g. --data=lightning_vae.data.ShapesDataModule or your own LightningDataModule)"
            )

    def after_instantiate_classes(self) -> None:
        self.trainer.callbacks.extend(entry_point_callbacks())  # type: ignore[attr-defined]

    def _check_data_fits_model(self) -> None:
        expected = getattr(self.model, "data_shape", None)
        given = getattr(self.datamodule, "data_shape", None)
        if expected is None or given is None or tuple(expected) == tuple(given):
            return
        raise CLIError(
            f"lightning-vae {self.subcommand}: the model takes examples of shape {tuple(expected)} but "
            f"{type(self.datamodule).__name__} gives {tuple(given)}. Use the data the model was trained on: with "
            "--ckpt_path and no --config, the checkpoint's own data module is used"
        )

    def before_fit(self) -> None:
        self._check_data_fits_model()
        pin_logger_versions(self.trainer)

    def before_validate(self) -> None:
        self._check_data_fits_model()

    def before_test(self) -> None:
        self._check_data_fits_model()

    def before_predict(self) -> None:
        self._check_data_fits_model()

    def after_fit(self) -> None:
        self._summary()

    @rank_zero_only
    def _summary(self) -> None:
        print(summarize(self.trainer), flush=True)


_DESCRIPTION = (
    "Train and evaluate a VAE (fit, validate, test, predict), e.g. `lightning-vae fit --config shapes`. "
    "`lightning-vae configs` lists the shipped configs (`--copy DIR` copies them for editing). After training: "
    "`lightning-vae sample --ckpt_path CKPT` writes a PNG grid of prior samples, `lightning-vae reconstruct "
    "--ckpt_path CKPT` one of reconstructions (see `lightning-vae sample --help`)."
)


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
      or ``configs/shapes.yaml`` run from outside a checkout);
    - ``validate``/``test``/``predict`` with ``--ckpt_path`` and neither ``--config`` nor ``--data`` get the data
      module the checkpoint was trained on (``--data.init_args.KEY=VALUE`` still overrides its arguments);
    - a data-module class given after a config (or a later config) for another class starts from its own
      defaults, not from the earlier class's arguments.

    Raises:
        CLIError: If a ``--config`` names nothing, or the checkpoint cannot be read.

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
                elif arg.startswith(f"{flag}="):
                    out[i] = f"{flag}={shipped.resolve(arg.split('=', 1)[1])}"
        subcommand = next((a for a in out if a in SUBCOMMANDS), None)
        ckpt = _option_value(out, ["--ckpt_path"])
        has_config = _option_value(out, ["--config", "-c"]) is not None
        has_data = any(a == "--data" or a.startswith(("--data=", "--data.class_path")) for a in out)
        if subcommand in EVALUATION and ckpt and not has_config and not has_data:
            spec = checkpoint_data_config(ckpt)
            if spec is not None:
                position = out.index(subcommand) + 1
                out.insert(position, f"--data={json.dumps(spec, default=str)}")
        out = _fresh_data_on_class_change(out)
    except CLIError:
        raise
    except ValueError as err:
        raise CLIError(str(err)) from err
    return out


def build_cli(args: Any = None) -> VAECLI:
    """Build and run the CLI (``args`` as a list or dict for programmatic use and tests); return it.

    A list goes through :func:`prepare_args` first.
    """
    if isinstance(args, (list, tuple)):
        args = prepare_args(args)
    return VAECLI(
        VAE,
        LightningDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the optimizer is VAE's own `optimizer` argument
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": _DESCRIPTION},
        args=args,
    )


def _configs_command(argv: Sequence[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="lightning-vae configs",
        description="List the configs shipped with lightning-vae, or copy them (LightningCLI and Hydra) for editing.",
    )
    parser.add_argument("--copy", metavar="DIR", default=None, help="copy every shipped config into the folder DIR")
    parser.add_argument("--force", action="store_true", help="with --copy: write into an existing, non-empty DIR")
    args = parser.parse_args(argv)
    if args.copy is None:
        root = shipped.packaged_dir()
        experiments = sorted(p.stem for p in (root / "experiment").glob("*.yaml"))
        print(f"Configs shipped with lightning-vae, in {root}:")
        print("  LightningCLI (lightning-vae fit --config NAME): " + ", ".join(shipped.lightning_cli_configs()))
        print("  Hydra experiments (lightning-vae-hydra experiment=NAME): " + ", ".join(experiments))
        print("Copy them for editing with: lightning-vae configs --copy DIR")
        return
    try:
        target = shipped.copy_to(args.copy, force=args.force)
    except ValueError as err:
        parser.error(str(err))
    print(f"lightning-vae configs: copied the configs to {target}")
    print(f"  LightningCLI: lightning-vae fit --config {target / 'shapes.yaml'}")
    print(f"  Hydra:        lightning-vae-hydra --config-dir {target}   (or set LIGHTNING_VAE_CONFIG_DIR={target})")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-vae``: LightningCLI plus the ``sample``, ``reconstruct`` and ``configs`` commands."""
    from lightning_vae import generate

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in generate.COMMANDS:
        generate.main(args)
        return
    if args and args[0] == "configs":
        _configs_command(args[1:])
        return
    try:
        prepared = prepare_args(args)
        if argv is None:  # as a console script: LightningCLI reads sys.argv (no programmatic-use warning)
            sys.argv = [sys.argv[0], *prepared]
            build_cli(None)
        else:
            build_cli(prepared)
    except CLIError as err:
        message = str(err)
        sys.exit(message if message.startswith("lightning-vae") else f"lightning-vae: {message}")


if __name__ == "__main__":
    main()
