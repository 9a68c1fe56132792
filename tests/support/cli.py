"""Command-line arguments several tests share."""

from __future__ import annotations

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
