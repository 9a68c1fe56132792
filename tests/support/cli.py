"""Command-line arguments, a CLI-trained checkpoint and the printed config several CLI tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lightning_vae.cli import build_cli

#: ``lightning-vae fit`` of the shipped shapes config for two steps on 128 training and 64 validation images
#: (``configs/cli/shapes.yaml`` resolves to the shipped config from any folder).
SHAPES_TWO_STEPS = [
    "fit",
    "--config=configs/cli/shapes.yaml",
    "--data.init_args.n_train=128",
    "--data.init_args.n_val=64",
    "--trainer.max_steps=2",
    "--trainer.enable_progress_bar=false",
]

#: The shipped shapes config on 28-pixel images (not the config's 32), small and quiet.
SMALL_28 = [
    "--config=configs/cli/shapes.yaml",
    "--data.init_args.image_size=28",
    "--model.encoder.init_args.image_size=28",
    "--model.decoder.init_args.image_size=28",
    "--data.init_args.n_train=128",
    "--data.init_args.n_val=48",
    "--data.init_args.batch_size=32",
    "--trainer.enable_progress_bar=false",
]


def train_checkpoint_28(root: Path) -> Path:
    """A conv VAE on 28-px shapes (not the 32 px of the default config), trained two steps through the CLI."""
    here = os.getcwd()
    os.chdir(root)  # the config's checkpoint folder is relative to the working directory
    try:
        cli = build_cli(args=["fit", *SMALL_28, "--trainer.max_steps=2", f"--trainer.default_root_dir={root}"])
    finally:
        os.chdir(here)
    return root / cli.trainer.checkpoint_callback.best_model_path


def print_config(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    """The config LightningCLI prints for ``args`` (``--print_config``), parsed."""
    with pytest.raises(SystemExit) as exit_info:
        build_cli(args=[*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)
