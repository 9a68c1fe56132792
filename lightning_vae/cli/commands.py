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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-vae``: LightningCLI plus the ``sample``, ``reconstruct`` and ``configs`` commands.

    An error ends the command with one line naming it and exit status 1 (:mod:`lightning_vae.cli.errors`);
    ``--debug`` or ``LIGHTNING_VAE_DEBUG=1`` shows the traceback instead.
    """
    run_command("lightning-vae", lambda args: _main(args, console=argv is None), sys.argv[1:] if argv is None else argv)


def _main(args: list[str], console: bool) -> None:
    from lightning_vae.cli import generate

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


__all__ = ["main"]
