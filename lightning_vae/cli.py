"""The ``lightning-vae`` command: LightningCLI over :class:`~lightning_vae.VAE` and any DataModule.

Examples::

    lightning-vae fit --config configs/shapes.yaml
    lightning-vae fit --config configs/mnist_mlp.yaml --model.beta=4 --trainer.max_epochs=5
    lightning-vae test --config configs/shapes.yaml --ckpt_path logs/shapes/.../last.ckpt

After training (see :mod:`lightning_vae.generate`)::

    lightning-vae sample --ckpt_path last.ckpt --output samples.png
    lightning-vae reconstruct --ckpt_path last.ckpt --config configs/shapes.yaml --output reconstructions.png
    lightning-vae predict --config configs/shapes.yaml --ckpt_path last.ckpt \\
        --trainer.callbacks+=PosteriorMeanWriter --trainer.callbacks.output_path=latents.npy
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

import lightning_vae.callbacks  # noqa: F401 - makes `--trainer.callbacks+=KLAnnealing` (short class names) resolve
from lightning_vae.module import VAE


class VAECLI(LightningCLI):
    """LightningCLI with the shapes data as default and a summary printed after ``fit``."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.set_defaults({"data": {"class_path": "lightning_vae.data.ShapesDataModule"}})

    def after_fit(self) -> None:
        self._summary()

    @rank_zero_only
    def _summary(self) -> None:
        print(summarize(self.trainer), flush=True)


def summarize(trainer: Trainer) -> str:
    """What a run reached: ELBO = reconstruction - KL, bits/dim, the checkpoint and the TensorBoard command."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    lines = [f"\nlightning-vae: trained {trainer.current_epoch} epochs, {trainer.global_step} steps"]
    for stage in ("val", "train"):
        if f"{stage}/elbo" in metrics:
            lines.append(
                f"  {stage}: ELBO {metrics[f'{stage}/elbo']:.2f} nats = reconstruction "
                f"{-metrics[f'{stage}/recon']:.2f} - KL {metrics[f'{stage}/kl']:.2f} (nats per example)"
            )
            if f"{stage}/bits_per_dim" in metrics and math.isfinite(metrics[f"{stage}/bits_per_dim"]):
                lines.append(f"  {stage}: {metrics[f'{stage}/bits_per_dim']:.4f} bits/dim (from -ELBO)")
            break
    ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or getattr(
        trainer.checkpoint_callback, "last_model_path", ""
    )
    if ckpt:
        lines.append(f"  checkpoint: {ckpt}")
    if trainer.logger is not None and trainer.logger.log_dir:
        log_dir = trainer.logger.log_dir
        lines.append(f"  TensorBoard logs: {log_dir}")
        lines.append(f"  view them with: tensorboard --logdir {log_dir}  (then open http://localhost:6006)")
    return "\n".join(lines)


_DESCRIPTION = (
    "Train and evaluate a VAE (fit, validate, test, predict). After training: `lightning-vae sample --ckpt_path CKPT` "
    "writes a PNG grid of prior samples, `lightning-vae reconstruct --ckpt_path CKPT` one of reconstructions "
    "(see `lightning-vae sample --help`)."
)


def build_cli(args: Any = None) -> VAECLI:
    """Build and run the CLI (``args`` as a list or dict for programmatic use and tests); return it."""
    return VAECLI(
        VAE,
        LightningDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": _DESCRIPTION},
        args=args,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-vae``: LightningCLI plus the ``sample`` and ``reconstruct`` commands."""
    from lightning_vae import generate

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in generate.COMMANDS:
        generate.main(args)
    else:
        build_cli(None if argv is None else args)


if __name__ == "__main__":
    main()
