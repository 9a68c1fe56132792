"""``main``: the ``lightning-vae`` entry point, and the ``configs`` command."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning_vae import configs as shipped
from lightning_vae.cli.args import prepare_args
from lightning_vae.cli.errors import run_command
from lightning_vae.cli.vaecli import build_cli


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
        experiments = sorted(p.stem for p in (root / shipped.HYDRA_FOLDER / "experiment").glob("*.yaml"))
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
    cli, hydra = target / shipped.CLI_FOLDER, target / shipped.HYDRA_FOLDER
    print(f"  LightningCLI: lightning-vae fit --config {cli / 'shapes.yaml'}")
    print(f"  Hydra:        lightning-vae-hydra --config-dir {hydra}   (or set LIGHTNING_VAE_CONFIG_DIR={hydra})")


#: Every command of ``lightning-vae``, with what it does (``lightning-vae --help`` lists them).
COMMANDS = {
    "fit": "train a model: lightning-vae fit --config shapes (a shipped config by name, or your YAML)",
    "validate": "evaluate a checkpoint on the validation split: lightning-vae validate --ckpt_path CKPT",
    "test": "evaluate a checkpoint on the test split: lightning-vae test --ckpt_path CKPT",
    "predict": "posterior means of a data set: lightning-vae predict --ckpt_path CKPT",
    "sample": "a PNG grid of samples from the prior: lightning-vae sample --ckpt_path CKPT",
    "reconstruct": "a PNG grid of inputs and their reconstructions: lightning-vae reconstruct --ckpt_path CKPT",
    "export": "ONNX, TorchScript or torch.export files: lightning-vae export --ckpt_path CKPT --format onnx",
    "configs": "list the shipped configs, or copy them for editing: lightning-vae configs --copy DIR",
}


def overview() -> str:
    """What ``lightning-vae --help`` prints: every command, one line each.

    Example::

        >>> print(overview().splitlines()[0])
        usage: lightning-vae {fit,validate,test,predict,sample,reconstruct,export,configs} ...
    """
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: lightning-vae {{{','.join(COMMANDS)}}} ...",
        "",
        "Train, evaluate, draw from and export variational autoencoders.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        "`lightning-vae COMMAND --help` shows the options of one command (fit, validate, test and predict take every",
        "LightningCLI option: --config, --model.*, --data.*, --trainer.*, --print_config).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-vae``: LightningCLI plus the ``sample``, ``reconstruct``, ``export`` and ``configs``
    commands; ``-h``/``--help`` alone prints an overview of the commands.

    An error ends the command with one line naming it and exit status 1 (:mod:`lightning_vae.cli.errors`);
    ``--debug`` or ``LIGHTNING_VAE_DEBUG=1`` shows the traceback instead.
    """
    run_command("lightning-vae", lambda args: _main(args, console=argv is None), sys.argv[1:] if argv is None else argv)


def _main(args: list[str], console: bool) -> None:
    from lightning_vae.cli import generate

    if args[:1] in (["-h"], ["--help"]):
        print(overview())
        return
    if args and args[0] in generate.COMMANDS:
        generate.main(args)
        return
    if args and args[0] == "configs":
        _configs_command(args[1:])
        return
    prepared = prepare_args(args)
    if console:  # as a console script: LightningCLI reads sys.argv (no programmatic-use warning)
        sys.argv = [sys.argv[0], *prepared]
        build_cli(None, exit_on_error=False)
    else:
        build_cli(prepared, exit_on_error=False)


__all__ = ["COMMANDS", "main", "overview"]
