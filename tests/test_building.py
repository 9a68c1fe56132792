"""Rebuilding classes named in checkpoints and configs (building.py): each slot takes only subclasses of its base and
nothing is called before the check; nested descriptions are built and checked too; modules that record their
arguments are described; a training module's hyperparameters never hold a module; and a checkpoint's hyperparameters
are walked for every class they name. (Hostile checkpoints in whole runs: tests/faults/.)"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule
from support.modules import PlainDecoder
from torch import nn

from lightning_vae.building import build, check_checkpoint_classes, describe, resolve_class, save_hparams
from lightning_vae.nets import MLPEncoder


@pytest.mark.parametrize(
    ("path", "slot"),
    [
        ("lightning_vae.nets.MLPEncoder", "encoder"),
        ("torch.nn.Tanh", "decoder.activation"),
        ("lightning_vae.distributions.likelihoods.GaussianLikelihood", "likelihood"),
        ("lightning_vae.distributions.priors.MixtureOfGaussiansPrior", "prior"),
        ("lightning_vae.data.ShapesDataModule", "data"),
        ("lightning_vae.objective.ELBO", "objective"),
        ("torch.optim.Adam", "optimizer"),
        ("torch.optim.lr_scheduler.StepLR", "lr_scheduler"),
        ("torch.optim.lr_scheduler.ReduceLROnPlateau", "lr_scheduler"),
    ],
)
def test_each_slot_takes_subclasses_of_its_base(path: str, slot: str) -> None:
    cls = resolve_class(path, slot)
    assert isinstance(cls, type) and f"{cls.__module__}.{cls.__qualname__}".endswith(path.rsplit(".", 1)[1])


@pytest.mark.parametrize(
    ("path", "slot", "message"),
    [
        ("os.system", "encoder", r"`encoder` to name a subclass of torch\.nn\..*Module, got 'os\.system'"),
        ("builtins.open", "decoder", r"got 'builtins\.open' \(a builtin_function_or_method\); refused without calling"),
        ("lightning_vae.nets.MLPEncoder", "likelihood", r"subclass of lightning_vae\.distributions\.likelihoods\."),
        ("torch.nn.Linear", "data", r"`data` to name a subclass of lightning\.pytorch\..*LightningDataModule"),
        ("torch.nn.Linear", "optimizer", r"subclass of torch\.optim\.optimizer\.Optimizer"),
        ("torch.optim.Adam", "lr_scheduler", r"LRScheduler or .*ReduceLROnPlateau"),
        ("lightning_vae.nets.MLPEncoder", "objective", r"subclass of lightning_vae\.objective\.base\.Objective"),
        ("no_such_package.Thing", "encoder", r"Cannot import the `encoder` class 'no_such_package\.Thing'"),
        ("lightning_vae.nets.NoSuchNet", "encoder", r"Cannot import the `encoder` class 'lightning_vae\.nets\.NoSuch"),
        ("MLPEncoder", "encoder", r"`encoder` class_path to be a dotted path such as 'package\.module\.Class'"),
        (3, "encoder", r"class_path to be a dotted path .*got 3"),
    ],
)
def test_what_a_slot_does_not_take_is_refused_by_name(path: Any, slot: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_class(path, slot)


def test_build_constructs_nested_descriptions_after_checking_each(tmp_path: Path) -> None:
    assert build(5, "encoder") == 5 and build({"no": "class"}, "encoder") == {"no": "class"}  # passed through
    layer = {"class_path": "torch.nn.TransformerEncoderLayer", "init_args": {"d_model": 4, "nhead": 1}}
    layer["init_args"].update(batch_first=True, nhead=2)
    spec = {"class_path": "torch.nn.TransformerEncoder", "init_args": {"encoder_layer": layer, "num_layers": 2}}
    built = build(spec, "encoder")
    assert isinstance(built, nn.TransformerEncoder) and len(built.layers) == 2
    assert isinstance(built.layers[0], nn.TransformerEncoderLayer) and built.layers[0].linear1.in_features == 4
    assert isinstance(build({"class_path": "torch.nn.Tanh"}, "encoder"), nn.Tanh)  # no init_args
    target = tmp_path / "pwned"
    hostile = {"class_path": "torch.nn.TransformerEncoder", "init_args": {"encoder_layer": {
        "class_path": "os.system", "init_args": {"command": f"touch {target}"}}, "num_layers": 1}}  # fmt: skip
    with pytest.raises(ValueError, match=r"`encoder\.encoder_layer` to name a subclass of torch\.nn"):
        build(hostile, "encoder")
    assert not target.exists()
    with pytest.raises(TypeError, match=r"Expected `encoder\.init_args` to be a mapping, got list"):
        build({"class_path": "torch.nn.Tanh", "init_args": [1]}, "encoder")


def test_modules_that_record_their_arguments_are_described() -> None:
    encoder = MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(8,), activation="tanh")
    description = describe(encoder)
    assert description == {
        "class_path": "lightning_vae.nets.mlp.MLPEncoder",
        "init_args": {"input_shape": (1, 4, 4), "latent_dim": 3, "hidden_sizes": (8,), "activation": "tanh"},
    }
    rebuilt = build(description, "encoder")
    rebuilt.load_state_dict(encoder.state_dict())
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(rebuilt(x)[0], encoder(x)[0], rtol=0, atol=0)
    assert describe(PlainDecoder()) is None  # records nothing
    assert describe(LightningModule()) is None  # a training module is not a network to describe


class _Holder(LightningModule):
    def __init__(self, encoder: Any, decoder: Any, optimizer: Any = None, lr: float = 1e-3) -> None:
        super().__init__()
        save_hparams(self, inspect.currentframe(), {"encoder": encoder, "decoder": decoder}, {"optimizer": optimizer})


def test_hyperparameters_hold_descriptions_never_modules() -> None:
    encoder = MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(8,))
    holder = _Holder(encoder, PlainDecoder(), optimizer=torch.optim.SGD, lr=0.5)
    hparams = dict(holder.hparams)
    assert hparams["encoder"] == describe(encoder) and hparams["lr"] == 0.5
    assert "decoder" not in hparams  # cannot be described: a checkpoint needs it passed again
    assert "optimizer" not in hparams  # a callable: LightningCLI records it in its own config
    assert not any(isinstance(v, nn.Module) for v in hparams.values())
    spec = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.1}}
    assert dict(_Holder("mlp", "mlp", optimizer=spec).hparams)["optimizer"] == spec  # a description is kept
    assert dict(_Holder("mlp", "mlp").hparams)["encoder"] == "mlp"  # a name is kept as it is


def test_a_checkpoints_hyperparameters_are_walked_for_every_class() -> None:
    clean = {
        "encoder": {"class_path": "lightning_vae.nets.MLPEncoder", "init_args": {"latent_dim": 2}},
        "likelihood": {"class_path": "lightning_vae.distributions.likelihoods.BernoulliLikelihood"},
        "optimizer": "torch.optim.Adam",
        "callbacks": [{"class_path": "torch.nn.Identity"}],
    }
    check_checkpoint_classes(clean)
    cases = [
        ({"likelihood": {"class_path": "lightning_vae.nets.MLPEncoder"}}, r"`likelihood`: Expected `likelihood`"),
        ({"optimizer": "os.system"}, r"the checkpoint: hyperparameter `optimizer`: .*'os\.system'"),
        ({"lr_scheduler": "torch.nn.Linear"}, r"hyperparameter `lr_scheduler`"),
        ({"encoder": {"class_path": "torch.nn.Identity", "init_args": {"act": {"class_path": "os.system"}}}},
         r"hyperparameter `encoder\.init_args\.act`: Expected `network`"),
        ({"extra": [{"class_path": "lightning_vae.nets.MLPEncoder"}, {"class_path": "subprocess.run"}]},
         r"hyperparameter `extra\[1\]`"),
        ({"data": {"class_path": "torch.nn.Linear"}}, r"`data`: Expected `data` to name a subclass of .*DataModule"),
    ]  # fmt: skip
    for hparams, message in cases:
        with pytest.raises(ValueError, match=message):
            check_checkpoint_classes(hparams, source="the checkpoint")
    with pytest.raises(ValueError, match=r"^last\.ckpt: hyperparameter `optimizer`"):
        check_checkpoint_classes({"optimizer": "os.system"}, source="last.ckpt")
