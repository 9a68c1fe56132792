"""``main``: the ``lightning-vae`` entry point, and the ``configs`` command."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning_vae import configs as shipped
from lightning_vae.cli.args import CLIError, prepare_args
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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-vae``: LightningCLI plus the ``sample``, ``reconstruct`` and ``configs`` commands."""
    from lightning_vae.cli import generate

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


__all__ = ["main"]
