"""A checkpoint is data: loading one never runs code it names, and a refusal says which class and why."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae import VAE
from lightning_vae.building import build, resolve_class
from lightning_vae.data import TensorDataModule


@pytest.fixture(scope="module")
def clean_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ckpt")
    vae = tiny_vae(likelihood="bernoulli")
    trainer = Trainer(**trainer_kwargs(tmp, max_epochs=1, limit_val_batches=0))
    trainer.fit(vae, datamodule=TensorDataModule(torch.rand(16, 1, 8, 8), batch_size=8))
    path = tmp / "clean.ckpt"
    trainer.save_checkpoint(path)
    return torch.load(path, weights_only=True)


def _payloads(target: Path) -> dict[str, dict]:
    """Callables that would create ``target`` if they were ever called with the planted arguments."""
    return {
        "os.system": {"class_path": "os.system", "init_args": {"command": f"touch {target}"}},
        "subprocess.run": {"class_path": "subprocess.run", "init_args": {"args": ["touch", str(target)]}},
        "builtins.open": {"class_path": "builtins.open", "init_args": {"file": str(target), "mode": "w"}},
        "pathlib.Path": {"class_path": "pathlib.Path", "init_args": {}},  # a class, but not a network
    }


PLACES = ["encoder", "decoder", "likelihood", "prior", "optimizer", "lr_scheduler", "encoder.init_args.activation"]


def _plant(checkpoint: dict, place: str, payload: dict) -> dict:
    hostile = copy.deepcopy(checkpoint)
    hparams = hostile["hyper_parameters"]
    if place == "encoder.init_args.activation":
        hparams["encoder"]["init_args"]["activation"] = payload
    else:
        hparams[place] = payload
    return hostile


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("payload", ["os.system", "subprocess.run", "builtins.open", "pathlib.Path"])
def test_no_payload_runs_from_any_place(clean_checkpoint: dict, tmp_path: Path, place: str, payload: str) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "hostile.ckpt"
    torch.save(_plant(clean_checkpoint, place, _payloads(target)[payload]), path)
    with pytest.raises(ValueError, match=payload.replace(".", r"\.")) as info:
        VAE.load_from_checkpoint(path)
    assert "refused" in str(info.value) and str(path) in str(info.value)
    assert not target.exists(), "the planted callable ran"


def test_bare_string_callables_are_refused(clean_checkpoint: dict, tmp_path: Path) -> None:
    """jsonargparse resolves a dotted string for a callable argument (optimizer): it must name an optimizer class."""
    hostile = copy.deepcopy(clean_checkpoint)
    hostile["hyper_parameters"]["optimizer"] = "os.system"
    torch.save(hostile, tmp_path / "h.ckpt")
    with pytest.raises(ValueError, match=r"optimizer.*os\.system"):
        VAE.load_from_checkpoint(tmp_path / "h.ckpt")


def test_instantiator_outside_lightning_allowlist_is_refused(clean_checkpoint: dict, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    hostile = copy.deepcopy(clean_checkpoint)
    hostile["hyper_parameters"]["_instantiator"] = "os.system"
    torch.save(hostile, tmp_path / "h.ckpt")
    with pytest.raises(ValueError, match="instantiator"):
        VAE.load_from_checkpoint(tmp_path / "h.ckpt")
    assert not target.exists()


def test_pickled_objects_are_refused_by_the_weights_only_load(clean_checkpoint: dict, tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # would run at unpickling time
            return (Path.touch, (tmp_path / "pwned",))

    hostile = copy.deepcopy(clean_checkpoint)
    hostile["hyper_parameters"]["extra"] = Payload()
    torch.save(hostile, tmp_path / "h.ckpt")
    with pytest.raises(ValueError, match="weights-only"):
        VAE.load_from_checkpoint(tmp_path / "h.ckpt")
    assert not (tmp_path / "pwned").exists()


def test_clean_checkpoint_still_loads(clean_checkpoint: dict, tmp_path: Path) -> None:
    torch.save(clean_checkpoint, tmp_path / "ok.ckpt")
    vae = VAE.load_from_checkpoint(tmp_path / "ok.ckpt")
    assert vae.sample(2).shape == (2, 1, 8, 8)


def test_build_checks_the_class_before_calling_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="refused without calling it"):
        build({"class_path": "builtins.open", "init_args": {"file": str(tmp_path / "x"), "mode": "w"}}, "encoder")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="Likelihood"):
        resolve_class("lightning_vae.nets.MLPEncoder", "likelihood")
    with pytest.raises(ValueError, match="Cannot import"):
        resolve_class("no_such_package.Thing", "encoder")


def test_data_module_recorded_in_a_checkpoint_is_checked(clean_checkpoint: dict, tmp_path: Path) -> None:
    """`lightning-vae test/reconstruct --ckpt_path X` rebuild the data module a checkpoint names: only a data module."""
    from lightning_vae.cli.generate import load_datamodule
    from lightning_vae.cli.runs import checkpoint_data_config

    target = tmp_path / "pwned"
    hostile = copy.deepcopy(clean_checkpoint)
    hostile["datamodule_hyper_parameters"] = {"_class_path": "os.system", "command": f"touch {target}"}
    torch.save(hostile, tmp_path / "h.ckpt")
    for load in (checkpoint_data_config, lambda p: load_datamodule(None, p)):
        with pytest.raises(ValueError, match=r"os\.system.*refused"):
            load(tmp_path / "h.ckpt")
    assert not target.exists()


def test_hydra_config_beside_a_checkpoint_is_checked(clean_checkpoint: dict, tmp_path: Path) -> None:
    from lightning_vae.cli.generate import load_datamodule

    target = tmp_path / "pwned"
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(f"data:\n  _target_: os.system\n  command: touch {target}\n")
    (run / "checkpoints").mkdir()
    torch.save(clean_checkpoint, run / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"os\.system.*refused"):
        load_datamodule(None, run / "checkpoints" / "last.ckpt")
    assert not target.exists()


# ---------------------------------------------------------------------------------------- resume reads data only
class _Payload:
    """Runs ``Path.touch(target)`` if it is ever unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _resume_payload(clean_checkpoint: dict, tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "pwned"
    hostile = copy.deepcopy(clean_checkpoint)
    hostile["loops"]["fit_loop"]["state_dict"]["payload"] = _Payload(target)  # restored by Lightning's loops
    path = tmp_path / "hostile.ckpt"
    torch.save(hostile, path)
    return path, target


def test_resume_never_unpickles_even_when_torch_is_told_to(
    clean_checkpoint: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns torch.load's default into a full unpickle; an explicit
    ``weights_only=True`` keeps it safe. Resume goes through the trainer's checkpoint IO, which every VAE run gets."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, target = _resume_payload(clean_checkpoint, tmp_path)
    data = TensorDataModule(torch.rand(16, 1, 8, 8), batch_size=8)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=2, limit_val_batches=0))  # a plain Trainer
    with pytest.raises(ValueError, match=r"hostile\.ckpt.*weights-only load refuses"):
        trainer.fit(tiny_vae(likelihood="bernoulli"), datamodule=data, ckpt_path=path, weights_only=False)
    assert not target.exists(), "resume unpickled the payload"
    for evaluate in ("validate", "test"):
        with pytest.raises(ValueError, match="weights-only"):
            getattr(trainer, evaluate)(tiny_vae(likelihood="bernoulli"), datamodule=data, ckpt_path=path)
    assert not target.exists()


def test_hydra_resume_never_unpickles(clean_checkpoint: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import open_dict
    from support.hydra import compose_cfg

    from lightning_vae.cli.hydra import train

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, target = _resume_payload(clean_checkpoint, tmp_path)
    cfg = compose_cfg(["data.n_train=16", "data.n_val=8", "data.batch_size=8", "trainer.max_epochs=2"], tmp_path)
    with open_dict(cfg):
        cfg.ckpt_path = str(path)
    with pytest.raises(ValueError, match="weights-only"):
        train(cfg)
    assert not target.exists()


def test_every_torch_load_in_the_package_says_weights_only_true() -> None:
    """Read from the source: each ``torch.load(...)`` call passes ``weights_only=True`` itself (torch's default
    can be turned off from the environment)."""
    import ast

    import lightning_vae

    calls = []
    for file in Path(lightning_vae.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "pl_load", "load"):
                if ast.unparse(node.func) == "load" and "torch" not in ast.unparse(node):
                    continue
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((file.name, node.lineno, keywords.get("weights_only")))
    assert calls and all(value == "True" for _, _, value in calls), calls
