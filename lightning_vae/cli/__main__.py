"""``python -m lightning_vae.cli``: the ``lightning-vae`` command."""

from lightning_vae.cli.commands import main

if __name__ == "__main__":
    main()
