"""prepare_args (cli/args.py): the command line before LightningCLI parses it: shipped config names resolved from any
folder, the data module a checkpoint was trained on added for validate/test/predict, a data-module class after
another starting from its own defaults, and errors as CLIError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.cli import print_config, train_checkpoint_28
from support.paths import ROOT

from lightning_vae.cli import CLIError, build_cli, prepare_args

SHIPPED = ROOT / "lightning_vae" / "configs" / "cli"


def test_config_by_short_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: the shipped ones are found by name
    shipped = ROOT / "lightning_vae" / "configs" / "cli"
    for given in ("shapes", "shapes.yaml", "configs/cli/shapes.yaml"):
        assert Path(prepare_args(["fit", "--config", given])[2]).resolve() == shipped / "shapes.yaml"
    assert Path(prepare_args(["fit", "--config=annealing/cyclical"])[1].split("=", 1)[1]).parent.name == "annealing"
    own = tmp_path / "shapes"  # a file of the user's wins over a shipped name
    own.write_text("seed_everything: 1\n")
    assert prepare_args(["fit", "-c", "shapes"])[2] == "shapes"
    with pytest.raises(CLIError, match=r"got 'nope' \(no such file\)\. Shipped configs: .*mnist_mlp.*shapes"):
        prepare_args(["fit", "--config", "nope"])
    cli = build_cli(
        args=[
            "fit",
            "--config",
            "shapes_beta_vae",
            "--trainer.fast_dev_run=true",
            "--data.init_args.n_train=64",
            "--data.init_args.n_val=64",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.model.beta > 1


def test_a_user_data_module_keeps_its_own_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # configs/... resolve to the shipped configs; outputs stay here
    printed = print_config(["fit", "--data.class_path", "support.modules.UserDataModule"], capsys)
    assert printed["data"] == {
        "class_path": "support.modules.UserDataModule",
        "init_args": {"root": "/data/mine", "batch_size": 7, "n_val": 3},
    }
    # the same through a user's YAML that names only the class
    config = tmp_path / "mine.yaml"
    config.write_text("data:\n  class_path: support.modules.UserDataModule\n")
    printed = print_config(["fit", f"--config={config}"], capsys)
    assert printed["data"]["init_args"] == {"root": "/data/mine", "batch_size": 7, "n_val": 3}
    # on top of a shipped config: its ShapesDataModule arguments (batch_size 128, n_val 2000) are not carried over
    for args in (
        ["--config=shapes", "--data.class_path", "support.modules.UserDataModule"],
        ["--config=shapes", "--data=support.modules.UserDataModule", "--data.init_args.batch_size=9"],
        ["--config=shapes", f"--config={config}"],
    ):
        printed = print_config(["fit", *args], capsys)
        assert printed["data"]["class_path"] == "support.modules.UserDataModule", args
        expected = {"root": "/data/mine", "batch_size": 9 if "--data.init_args.batch_size=9" in args else 7, "n_val": 3}
        assert printed["data"]["init_args"] == expected, args
    # the same class again keeps the config's arguments and takes the override
    printed = print_config(["fit", "--config=shapes", "--data=ShapesDataModule", "--data.init_args.n_val=5"], capsys)
    assert printed["data"]["init_args"]["n_train"] == 20000 and printed["data"]["init_args"]["n_val"] == 5


def test_both_forms_of_config_are_resolved_and_other_arguments_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = prepare_args(["fit", "-c", "shapes", "--model.beta=2", "--config=annealing/linear", "--trainer.max_steps=1"])
    assert out == [
        "fit",
        "-c",
        str(SHIPPED / "shapes.yaml"),
        "--model.beta=2",
        f"--config={SHIPPED / 'annealing' / 'linear.yaml'}",
        "--trainer.max_steps=1",
    ]
    assert prepare_args(["fit", "--model.beta=2"]) == ["fit", "--model.beta=2"]  # nothing to rewrite


def test_a_data_class_after_another_starts_from_its_own_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    shapes = str(SHIPPED / "shapes.yaml")  # its data module: lightning_vae.data.ShapesDataModule
    args = ["fit", f"--config={shapes}", "--data=my.UserData", "--data.init_args.root=/x", "--data=other.MoreData"]
    assert prepare_args(args) == [
        "fit",
        f"--config={shapes}",
        "--data=null",
        "--data=my.UserData",
        "--data.init_args.root=/x",
        "--data=null",
        "--data=other.MoreData",
    ]
    # the same class again (by its short name too) keeps the arguments given so far
    same = ["fit", f"--config={shapes}", "--data.class_path", "ShapesDataModule", "--data.init_args.n_val=5"]
    assert prepare_args(same) == same
    inline = ["fit", "--data=my.UserData", '--data={"init_args": {"root": "/y"}}']  # not a class: nothing inserted
    assert prepare_args(inline) == inline


@pytest.fixture(scope="module")
def checkpoint_28(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_checkpoint_28(tmp_path_factory.mktemp("trained28"))


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_without_a_config_uses_the_checkpoints_data(
    subcommand: str, checkpoint_28: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = build_cli(
        args=[
            subcommand,
            f"--ckpt_path={checkpoint_28}",
            "--data.init_args.n_val=20",  # still overrides the recorded arguments
            "--trainer.enable_progress_bar=false",
            "--trainer.limit_test_batches=1",
        ]
    )
    assert type(cli.datamodule).__name__ == "ShapesDataModule" and cli.datamodule.hparams.image_size == 28
    assert cli.datamodule.hparams.n_train == 128 and cli.datamodule.hparams.n_val == 20
    if subcommand == "predict":
        assert cli.trainer.predict_loop.predictions[0].shape == (20, 10)
    else:
        stage = "val" if subcommand == "validate" else "test"
        assert torch.isfinite(cli.trainer.callback_metrics[f"{stage}/elbo"])


def test_the_checkpoints_data_module_is_inserted_after_the_subcommand(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.ckpt"
    record = {"_class_path": "lightning_vae.data.ShapesDataModule", "image_size": 28, "n_val": 8}
    torch.save({"state_dict": {}, "datamodule_hyper_parameters": record}, ckpt)
    out = prepare_args(["test", f"--ckpt_path={ckpt}", "--data.init_args.n_val=3"])
    assert out[0] == "test" and out[2:] == [f"--ckpt_path={ckpt}", "--data.init_args.n_val=3"]
    assert out[1].startswith("--data=") and json.loads(out[1][len("--data=") :]) == {
        "class_path": "lightning_vae.data.ShapesDataModule",
        "init_args": {"image_size": 28, "n_val": 8},
    }
    for given in (["fit", f"--ckpt_path={ckpt}"], ["test", f"--ckpt_path={ckpt}", "--data=my.Data"]):
        assert prepare_args(given) == given  # fit, or data given: the checkpoint's record is not used
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "datamodule_hyper_parameters": {"_class_path": "os.system"}}, hostile)
    with pytest.raises(CLIError, match=r"os\.system.*refused"):
        prepare_args(["validate", "--ckpt_path", str(hostile)])
    with pytest.raises(CLIError, match=r"no such file"):
        prepare_args(["predict", f"--ckpt_path={tmp_path / 'missing.ckpt'}"])
