"""``VAECLI``: LightningCLI over :class:`~lightning_vae.VAE` and any DataModule, and :func:`build_cli`."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

import lightning_vae.callbacks  # noqa: F401 - makes `--trainer.callbacks+=KLAnnealing` (short class names) resolve
from lightning_vae import configs as shipped
from lightning_vae.building import check_checkpoint_classes
from lightning_vae.checkpoints import load_checkpoint
from lightning_vae.cli.args import EVALUATION, SUBCOMMANDS, CLIError, prepare_args
from lightning_vae.cli.record import RunRecord, run_record
from lightning_vae.cli.runs import entry_point_callbacks, pin_logger_versions, summarize
from lightning_vae.training.module import VAE


def _shipped_list() -> str:
    return ", ".join(n for n in shipped.lightning_cli_configs() if "/" not in n)


class VAECLI(LightningCLI):
    """LightningCLI over :class:`~lightning_vae.VAE` and any DataModule, with a summary printed after ``fit``.

    There is no default data module: the data come from ``--config`` (its ``data`` section), ``--data``, or, for
    ``validate``/``test``/``predict`` with ``--ckpt_path``, from the checkpoint (see :func:`prepare_args`).
    Every trainer gets :func:`~lightning_vae.cli.runs.entry_point_callbacks` (validation at the last step of a run
    that ``max_steps`` ends inside an epoch; the run's progress for the summary).
    """

    def add_core_arguments_to_parser(self, parser: Any) -> None:
        """LightningCLI's arguments, with ``data`` optional so that a missing one gets the message below."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=True, required=False)

    def _parse_ckpt_path(self) -> None:
        # The model's arguments come from the checkpoint, as LightningCLI reads them; first the file is checked
        # (CRC, weights only) and every class and setting it names, before jsonargparse resolves any of them.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and os.path.isfile(ckpt_path):
            checkpoint = load_checkpoint(ckpt_path)
            hparams = dict(checkpoint.get("hyper_parameters") or {})
            hparams.pop("_instantiator", None)  # LightningCLI drops it too
            check_checkpoint_classes(hparams, source=str(ckpt_path))
        super()._parse_ckpt_path()
        self._check_config()  # before the seed is set: the message is the first thing printed

    def add_arguments_to_parser(self, parser: Any) -> None:
        """A ``checkpoint`` section (Lightning's ``ModelCheckpoint``, ``save_last`` on) that configs set apart from
        ``trainer.callbacks``, so that a second ``--config`` replacing the callback list keeps it. Its folder is
        fixed: ``checkpoint.dirpath`` when given, else ``<trainer.default_root_dir>/checkpoints`` (not Lightning's
        per-version folder), so ``--ckpt_path=last`` resumes the run and moving ``default_root_dir`` moves the
        checkpoints with the logs."""
        from lightning.pytorch.callbacks import ModelCheckpoint

        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})

    def before_instantiate_classes(self) -> None:
        self._check_config()
        config = self._subcommand_config()[1]
        checkpoint, trainer = config.get("checkpoint"), config.get("trainer")
        if checkpoint is not None and checkpoint.get("dirpath") is None:
            root = (trainer.get("default_root_dir") if trainer is not None else None) or os.getcwd()
            checkpoint["dirpath"] = os.path.join(str(root), "checkpoints")

    def _subcommand_config(self) -> tuple[str | None, Any]:
        """The subcommand (``None`` without one) and its part of the parsed config."""
        subcommand = self.config.get("subcommand")
        return subcommand, self.config[subcommand] if subcommand else self.config

    def _check_config(self) -> None:
        subcommand, config = self._subcommand_config()
        command = f"lightning-vae {subcommand}" if subcommand else "lightning-vae"
        _check_classes(config)
        model = config.get("model")
        networks = model is not None and model.get("encoder") is not None and model.get("decoder") is not None
        if not networks and (model is None or model.get("model") is None):
            if subcommand in EVALUATION:
                raise CLIError(
                    f"{command}: no model. Pass --ckpt_path CKPT (a checkpoint written by `lightning-vae fit`) and "
                    f"optionally --config NAME, e.g. `{command} --ckpt_path path/to/last.ckpt`"
                )
            raise CLIError(
                f"{command}: no model to train. Pass a config: `{command} --config shapes` (shipped configs: "
                f"{_shipped_list()}; `lightning-vae configs` lists them, `lightning-vae configs --copy DIR` copies "
                "them for editing), or your own YAML file; or give the networks and data on the command line: "
                "--model.encoder=CLASS --model.decoder=CLASS --data=CLASS (or --model.model=CLASS, a latent-variable "
                "model such as lightning_vae.models.StackedVAEModel)"
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
        if self.subcommand == "fit":  # what evaluating the checkpoints needs without a config
            self.trainer.callbacks.append(RunRecord(run_record(self.config["fit"])))  # type: ignore[attr-defined]

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


def _plain(value: Any) -> Any:
    as_dict = getattr(value, "as_dict", None)
    return as_dict() if callable(as_dict) else value


def _check_classes(config: Any) -> None:
    """The model's and the data module's classes and the ``compile`` settings of a parsed config, by the rule the
    checkpoints follow (:func:`~lightning_vae.building.check_checkpoint_classes`); the trainer's classes are held
    to the trainer's annotated types by jsonargparse."""
    model = config.get("model")
    if model is not None:
        check_checkpoint_classes(_plain(model), source="the config's `model`")
    data = _plain(config.get("data"))
    if isinstance(data, dict) and data.get("class_path") is not None:
        check_checkpoint_classes({"data": data}, source="the config")


_DESCRIPTION = (
    "Train and evaluate a VAE (fit, validate, test, predict), e.g. `lightning-vae fit --config shapes`. "
    "`lightning-vae configs` lists the shipped configs (`--copy DIR` copies them for editing). After training: "
    "`lightning-vae sample --ckpt_path CKPT` writes a PNG grid of prior samples, `lightning-vae reconstruct "
    "--ckpt_path CKPT` one of reconstructions (see `lightning-vae sample --help`)."
)


def build_cli(args: Any = None, exit_on_error: bool = True) -> VAECLI:
    """Build and run the CLI (``args`` as a list or dict for programmatic use and tests); return it.

    A list goes through :func:`prepare_args` first. With ``exit_on_error=False`` (the ``lightning-vae`` command) a
    wrong argument raises jsonargparse's ``ArgumentError`` for the command's one-line report
    (:mod:`lightning_vae.cli.errors`) instead of printing the whole usage and exiting.
    """
    if isinstance(args, (list, tuple)):
        args = prepare_args(args)
    errors = {"exit_on_error": exit_on_error}
    return VAECLI(
        VAE,
        LightningDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the optimizer is VAE's own `optimizer` argument
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": _DESCRIPTION, **errors, **{name: dict(errors) for name in SUBCOMMANDS}},
        args=args,
    )


__all__ = ["VAECLI", "build_cli"]
