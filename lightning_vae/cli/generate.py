"""What a user does after training, from the command line: PNG grids of samples and reconstructions, export.

    lightning-vae sample --ckpt_path last.ckpt --output samples.png --n 64 --seed 0
    lightning-vae sample --ckpt_path cvae.ckpt --condition 7 --n 16      # a conditional model: 16 sevens
    lightning-vae sample --ckpt_path cvae.ckpt --condition all --n 80    # one row per class
    lightning-vae reconstruct --ckpt_path last.ckpt --config configs/cli/shapes.yaml --output reconstructions.png
    lightning-vae export --ckpt_path last.ckpt --format onnx --output exported

``export`` writes the encoder, decoder and sampler as ONNX, TorchScript or ``torch.export`` files
(:mod:`lightning_vae.export`) and runs them against PyTorch at two batch sizes before it reports.

Posterior means of a whole dataset go to ``.npy`` through LightningCLI ``predict`` with
:class:`~lightning_vae.callbacks.PosteriorMeanWriter` (see the README).

The data of ``reconstruct`` come from, in this order: ``--config`` (a LightningCLI YAML with a
``data`` section, or a Hydra config with ``data._target_``, e.g. a run's ``.hydra/config.yaml``); the
DataModule class LightningCLI recorded in the checkpoint; the ``.hydra/config.yaml`` of the Hydra run
the checkpoint belongs to.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule
from torch import Tensor

from lightning_vae.building import check_checkpoint_classes, resolve_class
from lightning_vae.callbacks.views import class_samples, prior_samples, reconstruction_rows
from lightning_vae.checks import check_choice, choices
from lightning_vae.cli.args import yaml_problem
from lightning_vae.cli.errors import debug_requested
from lightning_vae.cli.runs import checkpoint_data_config
from lightning_vae.export import FORMATS, PARTS, ExportError, check_export, export_model
from lightning_vae.targets import check_config
from lightning_vae.utilities import batch_data, is_conditional
from lightning_vae.viz import image_grid, write_png

#: The subcommands this module adds to ``lightning-vae``.
COMMANDS = ("sample", "reconstruct", "export")
#: The splits ``reconstruct`` reads examples from, and the stage that sets each up.
Split = Literal["train", "val", "test", "predict"]
_STAGES: dict[str, str] = {"train": "fit", "val": "validate", "test": "test", "predict": "predict"}
#: ``export`` fails when an exported graph differs from PyTorch by more than this (float32 graphs differ by ~1e-7).
EXPORT_TOLERANCE = 1e-4


def load_model(ckpt_path: str | os.PathLike, model_class: str = "lightning_vae.VAE", device: str = "cpu") -> Any:
    """Load a module from a checkpoint alone (networks rebuilt from its hyperparameters), in eval mode."""
    if not Path(ckpt_path).is_file():
        raise ValueError(f"Expected `ckpt_path` to be a checkpoint file, got {str(ckpt_path)!r}")
    cls: Any = resolve_class(model_class, "model")  # a LightningModule class
    model = cls.load_from_checkpoint(ckpt_path, map_location=device)
    return model.eval()


def sample_images(model: Any, n: int = 64, seed: int = 0, condition: Sequence[str] | None = None) -> Tensor:
    """``n`` prior samples in data space from a fixed seed (:func:`lightning_vae.viz.prior_samples`).

    With the same ``n`` and ``seed``, these are the images :class:`~lightning_vae.callbacks.PriorSampleLogger`
    shows for the same weights. A conditional model needs ``condition`` (:func:`parse_condition`); ``["all"]``
    draws one row of ``n // n_classes`` samples per class, the same latent noise in every row.

    Raises:
        ValueError: For a conditional model without a condition, a condition for an unconditional model, or a
            condition the model cannot take.
    """
    if not is_conditional(model):
        if condition:
            raise ValueError("the model is not conditional: leave out --condition")
        return prior_samples(model, n, seed)
    if not condition:
        raise ValueError(
            "the model is conditional: pass --condition (class labels, `all` for one row per class, or feature values)"
        )
    n_classes = getattr(model.model, "n_classes", None)
    if list(condition) == ["all"]:
        if not isinstance(n_classes, int):
            raise ValueError("--condition all needs a model conditional on class labels")
        return class_samples(model, max(1, n // n_classes), seed)
    return prior_samples(model, n, seed, context=parse_condition(condition, n, n_classes))


def parse_condition(values: Sequence[str], n: int, n_classes: int | None) -> Tensor:
    """The context of ``n`` samples from ``--condition`` values.

    With ``n_classes`` (labels): one label for every sample, or ``n`` labels, one each. Without (features): the values
    are one feature vector, the same for every sample.

    Raises:
        ValueError: For values that are not labels in ``[0, n_classes)`` (or not numbers), or a count of labels
            other than 1 or ``n``.

    Example::

        >>> parse_condition(["3"], 4, 10).tolist(), parse_condition(["0.5", "1"], 2, None).tolist()
        ([3, 3, 3, 3], [[0.5, 1.0], [0.5, 1.0]])
    """
    if n_classes is None:
        try:
            vector = torch.tensor([float(v) for v in values])
        except ValueError:
            raise ValueError(f"Expected --condition to be feature values (numbers), got {list(values)}") from None
        return vector.expand(n, -1).clone()
    try:
        labels = torch.tensor([int(v) for v in values])
    except ValueError:
        raise ValueError(f"Expected --condition to be class labels (integers) or `all`, got {list(values)}") from None
    if bool((labels < 0).any()) or bool((labels >= n_classes).any()):
        raise ValueError(f"Expected --condition labels in [0, {n_classes}), got {labels.tolist()}")
    if labels.numel() not in (1, n):
        raise ValueError(f"Expected one --condition label or one per sample ({n}), got {labels.numel()}")
    return labels.expand(n).clone()


def _data_from_mapping(
    config: Mapping[str, Any], overrides: Mapping[str, Any], source: str = "the config"
) -> LightningDataModule:
    data = config.get("data")
    if isinstance(data, str):
        data = {"class_path": data}
    if isinstance(data, Mapping) and "_target_" in data:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        node = OmegaConf.create(dict(config))
        for key, value in overrides.items():
            OmegaConf.update(node, f"data.{key}", value, force_add=True)
        # Every _target_ of the data section (nested ones too), checked against its slot before anything is called.
        check_config({"data": node.data}, source)
        return instantiate(node.data, _convert_="all")  # type: ignore[no-any-return]
    if isinstance(data, Mapping) and "class_path" in data:
        check_checkpoint_classes({"data": dict(data)}, source)
        cls = resolve_class(data["class_path"], "data")
        return cls(**{**dict(data.get("init_args") or {}), **overrides})  # type: ignore[no-any-return]
    raise ValueError(
        "Expected a config with a `data` section (`class_path`/`init_args` as LightningCLI writes it, or `_target_` "
        f"as in Hydra), got {sorted(config) if isinstance(config, Mapping) else type(config).__name__}"
    )


def load_datamodule(
    config: str | os.PathLike | None, ckpt_path: str | os.PathLike, overrides: Mapping[str, Any] | None = None
) -> LightningDataModule:
    """The DataModule of ``config``, else of the checkpoint (LightningCLI) or of its Hydra run.

    ``config`` is a YAML file or the name of a shipped config (``shapes``, ``configs/cli/shapes.yaml``), as for
    ``lightning-vae fit --config``.

    Raises:
        ValueError: If none of those describes a DataModule.
    """
    overrides = dict(overrides or {})
    if config is not None:
        from lightning_vae import configs as shipped

        config = shipped.resolve(config)  # a file, or a shipped config by name (`shapes`, `configs/cli/shapes.yaml`)
        problem = yaml_problem(config)
        if problem is not None:
            raise ValueError(f"--config {problem}")
        with open(config) as f:
            return _data_from_mapping(yaml.safe_load(f) or {}, overrides, str(config))
    recorded = checkpoint_data_config(ckpt_path)  # weights-only read; the class is checked before it is built
    if recorded is not None:
        return _data_from_mapping({"data": recorded}, overrides, str(ckpt_path))
    raise ValueError(
        f"The checkpoint {str(ckpt_path)!r} does not say which data it was trained on; pass --config with the "
        "LightningCLI or Hydra config of the run"
    )


def first_examples(datamodule: LightningDataModule, split: Split, n: int, model: Any) -> Tensor:
    """The first ``n`` examples of a split (``train``, ``val``, ``test`` or ``predict``) of ``datamodule``.

    Raises:
        ValueError: For an unknown split, or an empty one.
    """
    datamodule.setup(_STAGES[check_choice("split", split, Split)])
    loader = getattr(datamodule, f"{split}_dataloader")()
    parts, have = [], 0
    for batch in loader:
        x = batch_data(model, batch)
        parts.append(x[: n - have])
        have += parts[-1].shape[0]
        if have >= n:
            break
    if not parts:
        raise ValueError(f"The {split} split of {type(datamodule).__name__} is empty")
    return torch.cat(parts)


def reconstruction_images(model: Any, x: Tensor, nrow: int = 8) -> Tensor:
    """Rows of inputs, each followed by their reconstructions (as ``ReconstructionLogger`` shows them)."""
    return reconstruction_rows(model, x, nrow)


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"Expected --data_arg as KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``lightning-vae sample``, ``lightning-vae reconstruct`` and ``lightning-vae export``."""
    parser = argparse.ArgumentParser(
        prog="lightning-vae", description="Generate images from a trained VAE, or export it for deployment."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    checkpoint = argparse.ArgumentParser(add_help=False)
    checkpoint.add_argument(
        "--ckpt_path", required=True, help="checkpoint written by lightning-vae or lightning-vae-hydra"
    )
    checkpoint.add_argument(
        "--model_class", default="lightning_vae.VAE", help="LightningModule class of the checkpoint"
    )
    common = argparse.ArgumentParser(add_help=False, parents=[checkpoint])
    common.add_argument("--nrow", type=int, default=8, help="images per row of the grid")
    common.add_argument(
        "--value_range",
        type=float,
        nargs=2,
        default=(0.0, 1.0),
        metavar=("LOW", "HIGH"),
        help="data values shown as black and white",
    )
    common.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")

    sample = commands.add_parser("sample", parents=[common], help="PNG grid of samples from the prior")
    sample.add_argument("--n", type=int, default=64, help="number of samples")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent noise")
    sample.add_argument("--output", default="samples.png", help="PNG file to write")
    sample.add_argument(
        "--condition",
        nargs="+",
        default=None,
        metavar="VALUE",
        help="a conditional model's context: a class label for every sample, one label per sample, `all` (one row "
        "per class), or the values of one feature vector",
    )

    recon = commands.add_parser("reconstruct", parents=[common], help="PNG grid of inputs and their reconstructions")
    recon.add_argument(
        "--config",
        default=None,
        help="LightningCLI or Hydra config whose `data` section to use: a YAML file or a shipped config name (shapes)",
    )
    recon.add_argument(
        "--data_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a DataModule argument, e.g. --data_arg data_dir=/data/mnist (repeatable)",
    )
    recon.add_argument("--split", default="val", choices=choices(Split), help="which split")
    recon.add_argument("--n", type=int, default=16, help="number of examples")
    recon.add_argument("--output", default="reconstructions.png", help="PNG file to write")

    export = commands.add_parser(
        "export",
        parents=[checkpoint],
        help="write the encoder, decoder and sampler as ONNX, TorchScript or torch.export files",
        description="Write encoder (x -> loc, log_var), decoder (z -> likelihood mean) and sampler "
        "(noise -> sample) with a dynamic batch size, with a manifest.json, then run them against PyTorch.",
    )
    export.add_argument("--format", default="onnx", choices=tuple(FORMATS), help="file format (default onnx)")
    export.add_argument("--output", default="exported", help="folder to write")
    export.add_argument(
        "--parts", nargs="+", default=list(PARTS), choices=PARTS, help="graphs to write (default: all three)"
    )
    export.add_argument(
        "--data_shape",
        type=int,
        nargs="+",
        default=None,
        metavar="SIZE",
        help="shape of one example, e.g. 1 28 28, when the checkpoint does not record it",
    )
    export.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    export.add_argument("--no_check", action="store_true", help="do not run the files against PyTorch")
    return parser


def _fail(command: str, err: Exception) -> NoReturn:
    """Report an error of a run (not of its arguments) on one line without the usage text, and exit with status 2
    (with ``--debug`` or ``LIGHTNING_VAE_DEBUG=1``: raise it, with its traceback)."""
    if debug_requested():
        raise err
    message = " ".join(str(err).split())
    print(f"lightning-vae {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _export(args: argparse.Namespace) -> Path:
    model = load_model(args.ckpt_path, args.model_class, "cpu")
    written = export_model(
        model,
        args.output,
        args.format,
        parts=args.parts,
        data_shape=args.data_shape,
        opset=args.opset,
    )
    names = ", ".join(path.name for path in written.values())
    print(f"lightning-vae export: wrote {names} to {Path(args.output)} (any batch size)")
    if args.no_check:
        return Path(args.output)
    try:
        errors = check_export(model, written, data_shape=args.data_shape)
    except ImportError as err:
        print(f"  not checked against PyTorch: {err} (pip install onnxruntime to check ONNX files)")
        return Path(args.output)
    worst = max(errors.values())
    detail = ", ".join(f"{part} {error:.1e}" for part, error in errors.items())
    if worst > EXPORT_TOLERANCE:
        raise ExportError(
            f"the exported files differ from PyTorch at batch sizes 1 and 3 by up to {worst:.3g} ({detail}): a graph "
            "that depends on Python control flow over tensor values keeps only the branch its example took"
        )
    print(f"  checked against PyTorch at batch sizes 1 and 3: largest difference {detail}")
    return Path(args.output)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run ``sample``, ``reconstruct`` or ``export`` with ``argv`` (e.g. ``["sample", "--ckpt_path", "last.ckpt"]``).

    Returns:
        The PNG file written, or the export folder.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        try:
            return _export(args)
        except (ValueError, TypeError, OSError, ExportError) as err:
            _fail("export", err)
    if args.n <= 0 or args.nrow <= 0:
        parser.error(f"--n and --nrow must be positive, got {args.n} and {args.nrow}")
    try:
        model: LightningModule = load_model(args.ckpt_path, args.model_class, args.device)
        if args.command == "sample":
            images = sample_images(model, args.n, args.seed, args.condition)
        else:
            datamodule = load_datamodule(args.config, args.ckpt_path, _parse_overrides(args.data_arg))
            images = reconstruction_images(model, first_examples(datamodule, args.split, args.n, model), args.nrow)
    except ValueError as err:
        _fail(args.command, err)
    low, high = args.value_range
    nrow = args.nrow
    if args.command == "sample" and args.condition == ["all"]:
        nrow = images.shape[0] // int(cast(Any, model).model.n_classes)  # one row per class
    grid = image_grid(images, nrow, (low, high))
    path = write_png(args.output, grid)
    print(
        f"lightning-vae {args.command}: wrote a {grid.shape[2]}x{grid.shape[1]} grid of {images.shape[0]} images "
        f"to {path}"
    )
    return path


if __name__ == "__main__":
    main()
