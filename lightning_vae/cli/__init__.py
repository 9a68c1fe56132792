"""The ``lightning-vae`` command: LightningCLI over :class:`~lightning_vae.VAE` and any DataModule.

Examples::

    lightning-vae fit --config shapes                     # a shipped config, by name (or a path to your YAML)
    lightning-vae fit --config mnist_mlp --model.beta=4 --trainer.max_epochs=5
    lightning-vae test --ckpt_path logs/shapes/.../last.ckpt   # the data module recorded in the checkpoint
    lightning-vae configs --copy my_configs               # the shipped configs, to edit

After training (see :mod:`lightning_vae.cli.generate`)::

    lightning-vae sample --ckpt_path last.ckpt --output samples.png
    lightning-vae reconstruct --ckpt_path last.ckpt --output reconstructions.png
    lightning-vae predict --ckpt_path last.ckpt \\
        --trainer.callbacks+=PosteriorMeanWriter --trainer.callbacks.output_path=latents.npy

Modules: :mod:`~lightning_vae.cli.args` (the command line before LightningCLI parses it),
:mod:`~lightning_vae.cli.vaecli` (``VAECLI`` and :func:`build_cli`) and :mod:`~lightning_vae.cli.commands`
(:func:`main` and ``lightning-vae configs``); everything is importable from here.
"""

from __future__ import annotations

from lightning_vae.cli.args import EVALUATION, SUBCOMMANDS, CLIError, prepare_args
from lightning_vae.cli.commands import main
from lightning_vae.cli.runs import summarize
from lightning_vae.cli.vaecli import VAECLI, build_cli

__all__ = ["EVALUATION", "SUBCOMMANDS", "CLIError", "VAECLI", "build_cli", "main", "prepare_args", "summarize"]
