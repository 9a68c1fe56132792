"""The objective contract: an objective defined here, in this file, trains through ``VAE``, the CLI and Hydra.

Adding an objective is one new file and no edit elsewhere: :class:`HalfKL` below is such a file's content. Its
declared weight is annealed by ``KLAnnealing(weight=...)``, its extra term is logged under its own name, its state
goes through a checkpoint, and the run's facts (the dataset size) reach it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from support.cli import SHAPES_TWO_STEPS
from support.hydra import SMALL_SHAPES, compose_cfg
from support.modules import tiny_vae, trainer_kwargs
from torch import Tensor

from lightning_vae import VAE
from lightning_vae.callbacks import KLAnnealing
from lightning_vae.cli import main
from lightning_vae.cli.hydra import train
from lightning_vae.data import Batch, TensorDataModule
from lightning_vae.models import LatentVariableModel, ModelOutput
from lightning_vae.objective import OBJECTIVES, ELBOTerms, Objective, RunFacts, elbo_groups, make_objective


class HalfKL(Objective, name="half_kl_for_tests"):
    """``recon + gamma * KL``, reporting ``gamma_kl``: the ELBO with its own weight, written from the contract."""

    weights = ("gamma",)

    def __init__(self, gamma: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.gamma = gamma
        self.seen_facts: list[RunFacts] = []

    def setup(self, facts: RunFacts) -> None:
        super().setup(facts)
        self.seen_facts.append(facts)

    def forward(self, model: LatentVariableModel, batch: Batch, out: ModelOutput, report: bool) -> ELBOTerms:
        inference, generative = out
        terms = elbo_groups(
            batch.x, inference.posteriors, inference.z, generative.params, model.likelihood, generative.priors,
            beta=self.gamma, report=report,
        )  # fmt: skip
        return terms._replace(extra={"gamma_kl": (self.gamma * terms.kl).detach()})

    def state(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    def load_state(self, state: Any) -> None:
        self.gamma = float(state.get("gamma", self.gamma))


def _data() -> TensorDataModule:
    torch.manual_seed(0)
    return TensorDataModule(torch.rand(96, 1, 8, 8).round(), batch_size=16, val_fraction=1 / 3, seed=0)


def test_an_objective_of_this_file_trains_through_vae(tmp_path: Path) -> None:
    vae = tiny_vae(objective=HalfKL(gamma=0.25), n_eval_samples=2)
    assert OBJECTIVES["half_kl_for_tests"] is HalfKL and isinstance(make_objective("half_kl_for_tests"), HalfKL)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=None),
        callbacks=[KLAnnealing("linear", start=0.0, end=1.0, length=7, weight="gamma")],
        log_every_n_steps=1,
    )
    trainer.fit(vae, datamodule=_data())
    objective = vae.objective
    assert isinstance(objective, HalfKL)
    assert objective.seen_facts[-1] == RunFacts(dataset_size=64, world_size=1)  # from the data, not set by hand
    assert objective.gamma == 1.0  # the last of 8 steps (2 epochs x 4 batches) is the end of the ramp
    metrics = trainer.callback_metrics
    for key in ("train/gamma_kl", "val/gamma_kl", "train/gamma", "val/elbo", "val/nll_iw"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert "train/beta" not in metrics  # logged keys follow the objective's own weights
    # The objective's state and class survive a checkpoint.
    path = tmp_path / "half.ckpt"
    trainer.save_checkpoint(path)
    reloaded = VAE.load_from_checkpoint(path)
    assert isinstance(reloaded.objective, HalfKL) and reloaded.objective.gamma == 1.0
    with pytest.raises(AttributeError):
        reloaded.beta  # noqa: B018 - this objective has no beta; the module says so instead of inventing one


def test_an_objective_of_this_file_trains_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = f"{HalfKL.__module__}.HalfKL"
    assert sys.modules[HalfKL.__module__].HalfKL is HalfKL
    main([*SHAPES_TWO_STEPS, f"--model.objective.class_path={path}", "--model.objective.init_args.gamma=0.75"])
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    assert checkpoint["lightning_vae"]["objective"] == {"gamma": 0.75}
    assert checkpoint["hyper_parameters"]["objective"] == {"class_path": path, "init_args": {"gamma": 0.75}}


def test_an_objective_of_this_file_trains_through_hydra(tmp_path: Path) -> None:
    path = f"{HalfKL.__module__}.HalfKL"
    cfg = compose_cfg(
        [*SMALL_SHAPES, "trainer.max_steps=2", f"+model.objective._target_={path}", "+model.objective.gamma=0.3"],
        tmp_path,
    )
    metrics = train(cfg)
    assert "train/gamma_kl" in metrics and "train/beta" not in metrics


def test_an_objective_is_checked_against_its_slot() -> None:
    with pytest.raises(ValueError, match="objective"):
        VAE(tiny_vae().encoder, tiny_vae().decoder, objective={"class_path": "collections.OrderedDict"})  # type: ignore[arg-type]


def test_the_module_reads_and_sets_the_objectives_weights() -> None:
    vae = tiny_vae(objective=HalfKL())
    vae.objective.gamma = 0.1
    assert vae._weights() == {"gamma": 0.1}
    x = torch.rand(4, 1, 8, 8).round()
    terms, _ = vae.compute_terms(x)
    assert set(terms.extra or {}) == {"gamma_kl"}
    assert isinstance(vae.training_loss(x), Tensor)


class OwnOptimizer(HalfKL, name="own_optimizer_for_tests"):
    """:class:`HalfKL` with a scalar of its own, trained by its own SGD (the manual-optimization hooks)."""

    manual_optimization = True

    def __init__(self, gamma: float = 0.5) -> None:
        super().__init__(gamma)
        self.offset = torch.nn.Parameter(torch.zeros(()))
        self.clipped: list[int] = []

    def forward(self, model, batch, out, report):
        terms = super().forward(model, batch, out, report)
        return terms._replace(loss=terms.loss + self.offset.square())

    def configure_optimizers(self):
        return [torch.optim.SGD([self.offset], lr=0.1)]

    def manual_step(self, module, terms):
        for optimizer in module.optimizers():
            optimizer.zero_grad()
        module.manual_backward(terms.loss)
        for optimizer in module.optimizers():
            optimizer.step()
        return {"offset": self.offset.detach()}

    def before_optimizer_step(self, module, optimizer):
        self.clipped.append(len(optimizer.param_groups[0]["params"]))


def test_an_objective_with_its_own_optimizer_is_stepped_by_its_hooks(tmp_path: Path) -> None:
    assert tiny_vae().automatic_optimization and tiny_vae(objective=HalfKL()).automatic_optimization
    vae = tiny_vae(objective=OwnOptimizer())
    assert not vae.automatic_optimization
    model_optimizer, own = vae.configure_optimizers()
    held = {id(p) for p in model_optimizer.param_groups[0]["params"]}
    assert id(vae.objective.offset) not in held and held == {id(p) for p in vae.model.parameters()}
    assert own.param_groups[0]["params"] == [vae.objective.offset]
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1), log_every_n_steps=1)
    trainer.fit(vae, datamodule=_data())
    assert "train/offset" in trainer.callback_metrics and "train/gamma_kl" in trainer.callback_metrics
    assert vae.objective.clipped == [len(held), 1] * 2  # each optimizer, each of the two steps, after unscaling
