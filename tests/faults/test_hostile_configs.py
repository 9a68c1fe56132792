"""A config is data: no Hydra config, config group option, run folder or LightningCLI YAML runs code it names.

Each payload, were it ever called, would create a file (``builtins.open(file, "w")``, ``os.system("touch ...")``)
or hand the C++ compiler inductor runs a script of the attacker's (``compile: {options: {cpp.cxx: [...]}}``). Every
entry point must refuse it before anything is built, name the key and the name, and leave no file behind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from support.hydra import SMALL_SHAPES, compose_cfg
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae import VAE
from lightning_vae import configs as shipped
from lightning_vae.cli import main
from lightning_vae.cli.generate import load_datamodule
from lightning_vae.cli.generate import main as generate_main
from lightning_vae.cli.hydra import main as hydra_main
from lightning_vae.cli.hydra import train
from lightning_vae.data import TensorDataModule


def _open_payload(target: Path) -> dict:
    return {"_target_": "builtins.open", "file": str(target), "mode": "w"}


def _system_payload(target: Path) -> dict:
    return {"_target_": "os.system", "command": f"touch {target}"}


def _compile_payload(target: Path) -> dict:
    """What inductor would run as its C++ compiler: a script that creates ``target``."""
    script = target.parent / "cxx.sh"
    script.write_text(f"#!/bin/sh\ntouch {target}\n")
    script.chmod(0o755)
    return {"options": {"cpp.cxx": [str(script)]}}


# ---------------------------------------------------------------------------------------- Hydra: lightning-vae-hydra
@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the shipped configs, as a user edits them (and an attacker plants options in them)."""
    return shipped.copy_to(tmp_path / "configs")


def _hydra(argv: list[str], monkeypatch: pytest.MonkeyPatch, cwd: Path) -> SystemExit:
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["lightning-vae-hydra", *argv])
    with pytest.raises(SystemExit) as exit_info:
        hydra_main()
    return exit_info.value


# option planted in the config tree -> (its group override, the key the refusal names)
PLANTED = {
    "model/encoder": ("model/encoder=evil", r"model\.encoder\._target_"),
    "data": ("data=evil", r"data\.transform\._target_"),  # nested inside a real data module's arguments
    "callbacks": ("callbacks=evil", r"callbacks\.evil\._target_"),
    "logger": ("logger=evil", r"logger\.evil\._target_"),
}


@pytest.mark.parametrize("group", sorted(PLANTED))
@pytest.mark.parametrize("payload", ["open", "system"])
def test_a_planted_config_option_runs_nothing(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: str, payload: str
) -> None:
    target = tmp_path / "pwned"
    evil = (_open_payload if payload == "open" else _system_payload)(target)
    if group == "data":
        content = {"_target_": "lightning_vae.data.ShapesDataModule", "transform": evil}
    elif group in ("callbacks", "logger"):
        content = {"evil": evil}
    else:
        content = evil
    (config_dir / group / "evil.yaml").write_text(yaml.safe_dump(content))
    override, key = PLANTED[group]
    exit_ = _hydra(["--config-dir", str(config_dir), override, "trainer.max_steps=1"], monkeypatch, tmp_path)
    message = str(exit_.code)
    assert message.startswith("lightning-vae-hydra: ValueError:") and "\n" not in message
    assert key.replace("\\", "") in message and ("builtins.open" in message or "os.system" in message)
    assert f"{override} ({group}/evil.yaml)" in message  # the file it came from
    assert not target.exists(), "the planted callable ran"


HYDRA_SECTION = {
    "hydra callback": ["+hydra.callbacks.evil._target_=os.system", "+hydra.callbacks.evil.command=touch {target}"],
    "launcher": ["hydra.launcher._target_=os.system", "+hydra.launcher.command=touch {target}"],
    "logging handler": [
        "+hydra.job_logging.handlers.evil.class=os.system",
        "+hydra.job_logging.handlers.evil.command=touch {target}",
    ],
}


@pytest.mark.parametrize("place", sorted(HYDRA_SECTION))
def test_the_hydra_section_is_checked_before_hydra_instantiates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, place: str
) -> None:
    """Hydra builds its callbacks and launcher and applies its logging config before the task runs."""
    target = tmp_path / "pwned"
    overrides = [o.format(target=target) for o in HYDRA_SECTION[place]]
    exit_ = _hydra([*overrides, "trainer.max_steps=1"], monkeypatch, tmp_path)
    assert "os.system" in str(exit_.code) and "refused" in str(exit_.code)
    assert not target.exists(), "Hydra instantiated the planted callable"


def test_a_logging_config_option_with_a_factory_runs_nothing(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logging.config.dictConfig`` calls a ``()`` factory with the entry's other keys: Hydra applies
    ``hydra/job_logging`` before the task starts."""
    target = tmp_path / "pwned"
    (config_dir / "hydra" / "job_logging").mkdir(parents=True, exist_ok=True)
    evil = {"version": 1, "formatters": {"evil": {"()": "os.system", "command": f"touch {target}"}}}
    (config_dir / "hydra" / "job_logging" / "evil.yaml").write_text(yaml.safe_dump(evil))
    argv = ["--config-dir", str(config_dir), "hydra/job_logging=evil", "trainer.max_steps=1"]
    message = str(_hydra(argv, monkeypatch, tmp_path).code)
    assert "hydra.job_logging.formatters.evil.()" in message and "os.system" in message
    assert "hydra/job_logging=evil (hydra/job_logging/evil.yaml)" in message
    assert not target.exists(), "the logging config's factory ran"


def test_hydra_rerun_of_a_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pickle_file = tmp_path / "config.pickle"
    pickle_file.write_bytes(b"\x80\x04N.")
    exit_ = _hydra(["--experimental-rerun", str(pickle_file)], monkeypatch, tmp_path)
    assert "unpickles" in str(exit_.code) and "refused" in str(exit_.code)


def test_train_checks_the_whole_config_before_building_anything(tmp_path: Path) -> None:
    """``train(cfg)`` called directly (a notebook, a sweep): a payload nested in the encoder's arguments."""
    from omegaconf import open_dict

    target = tmp_path / "pwned"
    cfg = compose_cfg([*SMALL_SHAPES, "trainer.max_steps=1"], tmp_path)
    with open_dict(cfg):
        cfg.model.encoder.activation = _open_payload(target)
        cfg.model.compile = {"mode": "max-autotune"}  # allowed
    with pytest.raises(ValueError, match=r"model\.encoder\.activation\._target_.*builtins\.open.*refused"):
        train(cfg)
    assert not target.exists()
    with open_dict(cfg):
        cfg.model.encoder.activation = {"_target_": "torch.nn.Tanh"}
        cfg.model.compile = _compile_payload(target)
    with pytest.raises(ValueError, match=r"`compile` may set only .*got 'options'"):
        train(cfg)
    assert not target.exists()


# ---------------------------------------------------------------------------------------- run folders: reconstruct
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a plain Trainer run (it records no data module)."""
    tmp = tmp_path_factory.mktemp("trained")
    trainer = Trainer(**trainer_kwargs(tmp, max_epochs=1, limit_val_batches=0, enable_checkpointing=False))
    trainer.fit(tiny_vae(), datamodule=TensorDataModule(torch.rand(8, 1, 8, 8).round(), batch_size=4))
    trainer.save_checkpoint(tmp / "last.ckpt")
    return tmp / "last.ckpt"


@pytest.mark.parametrize("payload", ["open", "torch.load"])
def test_a_run_folder_config_with_nested_targets_runs_nothing(
    trained: Path, tmp_path: Path, payload: str, capsys: pytest.CaptureFixture
) -> None:
    """``lightning-vae reconstruct --config run/.hydra/config.yaml``: the data module is real, a nested argument
    names the payload (``torch.load`` of a pickle with ``weights_only: false`` would run its code)."""
    target = tmp_path / "pwned"
    if payload == "open":
        nested = _open_payload(target)
    else:
        pickled = tmp_path / "payload.pt"
        pickled.write_bytes(b"not read")
        nested = {"_target_": "torch.load", "f": str(pickled), "weights_only": False}
    run = tmp_path / "run" / ".hydra"
    run.mkdir(parents=True)
    config = run / "config.yaml"
    data = {"_target_": "lightning_vae.data.ShapesDataModule", "image_size": 28, "transform": nested}
    config.write_text(yaml.safe_dump({"data": data}))
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["reconstruct", "--ckpt_path", str(trained), "--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(config) in err and "data.transform._target_" in err and "refused" in err
    assert not target.exists()
    # the same file found beside the checkpoint (no --config): checked the same way
    (tmp_path / "run" / "checkpoints").mkdir()
    beside = tmp_path / "run" / "checkpoints" / "last.ckpt"
    beside.write_bytes(trained.read_bytes())
    with pytest.raises(ValueError, match=r"data\.transform\._target_.*refused"):
        load_datamodule(None, beside)
    assert not target.exists()


# ---------------------------------------------------------------------------------------- LightningCLI: lightning-vae
def _cli_config(tmp_path: Path, model_extra: dict) -> Path:
    config = {
        "model": {
            "encoder": {
                "class_path": "lightning_vae.nets.MLPEncoder",
                "init_args": {"input_shape": [1, 28, 28], "latent_dim": 2},
            },
            "decoder": {
                "class_path": "lightning_vae.nets.MLPDecoder",
                "init_args": {"latent_dim": 2, "output_shape": [1, 28, 28]},
            },
            **model_extra,
        },
        "data": {
            "class_path": "lightning_vae.data.ShapesDataModule",
            "init_args": {"n_train": 8, "n_val": 4, "image_size": 28, "batch_size": 4},
        },
        "trainer": {"max_steps": 1, "logger": False, "enable_progress_bar": False, "limit_val_batches": 0},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_compile_options_from_a_lightning_cli_config_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    target = tmp_path / "pwned"
    config = _cli_config(tmp_path, {"compile": _compile_payload(target)})
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    message = str(exit_info.value.code)
    assert message.startswith("lightning-vae fit: ValueError:") and "'options'" in message and "\n" not in message
    assert not target.exists()
    # whitelisted settings pass, and reach torch.compile
    allowed = _cli_config(tmp_path, {"compile": {"backend": "eager", "fullgraph": False, "dynamic": None}})
    main(["fit", "--config", str(allowed), f"--trainer.default_root_dir={tmp_path}"])


def test_a_checkpoint_cannot_choose_compile_options_for_the_cli(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``lightning-vae validate --ckpt_path hostile.ckpt``: the checkpoint's hyperparameters become the model's
    arguments; its ``compile`` would reach ``net.compile(**...)`` (and inductor's C++ compiler)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    target = tmp_path / "pwned"
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["hyper_parameters"]["compile"] = _compile_payload(target)
    checkpoint["datamodule_hyper_parameters"] = {
        "_class_path": "lightning_vae.data.ShapesDataModule",
        "image_size": 28,
        "n_train": 8,
        "n_val": 4,
    }
    hostile = tmp_path / "hostile.ckpt"
    torch.save(checkpoint, hostile)
    for command in (["validate", f"--ckpt_path={hostile}"], ["fit", f"--ckpt_path={hostile}"]):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert "compile" in str(exit_info.value.code) and "'options'" in str(exit_info.value.code)
    for command in ("sample", "export"):
        with pytest.raises(SystemExit):
            generate_main([command, "--ckpt_path", str(hostile), "--output", str(tmp_path / command)])
        assert "'options'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"hostile\.ckpt: `compile` may set only"):
        VAE.load_from_checkpoint(hostile)
    assert not target.exists()


def test_a_lightning_cli_checkpoint_naming_a_callable_is_refused_before_jsonargparse(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "pwned"
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["hyper_parameters"]["encoder"] = {"class_path": "os.system", "init_args": {"command": f"touch {target}"}}
    hostile = tmp_path / "hostile.ckpt"
    torch.save(checkpoint, hostile)
    data = json.dumps({"class_path": "lightning_vae.data.ShapesDataModule", "init_args": {"image_size": 28}})
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", f"--ckpt_path={hostile}", f"--data={data}"])
    assert "os.system" in str(exit_info.value.code) and str(hostile) in str(exit_info.value.code)
    assert not target.exists()
    assert not os.path.exists(tmp_path / "lightning_logs")  # nothing ran
