"""TargetRate: its rule at every step, convergence to the target KL, restored from a checkpoint, one β on every DDP
rank, argument validation."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from support.annealing import Recorder, UserVAE, binary_images, ddp_trainer, fit, rank_rows
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae.callbacks import TargetRate
from lightning_vae.data import TensorDataModule


@pytest.fixture
def datamodule() -> TensorDataModule:
    return TensorDataModule(binary_images(256), batch_size=32)


def test_target_rate_applies_its_rule_to_the_kl_of_each_step(tmp_path: Path, datamodule: TensorDataModule) -> None:
    # The KL starts under 0.8 nats (beta falls), then rises past 1.2 as beta gets small (beta climbs back).
    controller = TargetRate(target=1.0, step_size=0.2, tolerance=0.2, beta_max=4.0)
    rec = Recorder()
    fit(tmp_path, UserVAE(log_kl=True), datamodule, [controller, rec], max_steps=15, limit_train_batches=8)
    betas, kls = rec.column("beta"), rec.column("kl")
    assert betas[0] == 1.0
    factors = []
    for t in range(len(betas) - 1):
        factors.append(1.2 if kls[t] > 1.2 else 0.8 if kls[t] < 0.8 else 1.0)
        assert betas[t + 1] == pytest.approx(min(max(betas[t] * factors[-1], 1e-3), 4.0), rel=1e-12), t
    assert {0.8, 1.2} <= set(factors)  # both directions were taken
    assert controller.updates == 15
    assert controller.state_dict() == {"beta": pytest.approx(controller.next_beta(betas[-1], kls[-1])), "updates": 15}


def test_target_rate_converges_to_the_target_kl(tmp_path: Path) -> None:
    # Without control this model's KL settles near 5 nats at beta = 1; the controller must bring it to 8.
    target = 8.0
    rec = Recorder()
    module = UserVAE(log_kl=True, lr=1e-2)
    dm = TensorDataModule(binary_images(512), batch_size=64)
    callbacks = [TargetRate(target, step_size=0.05, tolerance=0.25), rec]
    fit(tmp_path, module, dm, callbacks, max_steps=200, limit_train_batches=None)
    kls = rec.column("kl")
    assert sum(kls[:10]) / 10 < target / 2  # it starts far from the target
    assert sum(kls[-50:]) / 50 == pytest.approx(target, abs=0.75)
    assert max(rec.column("beta")[-50:]) < 1.0  # it got there by lowering beta


def test_target_rate_restores_beta_from_a_checkpoint(tmp_path: Path, datamodule: TensorDataModule) -> None:
    first = TargetRate(target=100.0, step_size=0.1, tolerance=0.0)
    trainer = fit(tmp_path, tiny_vae(), datamodule, [first], max_steps=5, limit_train_batches=8)
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    assert first.beta == pytest.approx(0.9**5)
    second, rec = TargetRate(target=100.0, step_size=0.1, tolerance=0.0), Recorder()
    Trainer(**trainer_kwargs(tmp_path, max_steps=7, max_epochs=-1, limit_val_batches=0, callbacks=[second, rec])).fit(
        tiny_vae(), datamodule, ckpt_path=ckpt
    )
    assert rec.column("step") == [5, 6]
    assert rec.column("beta") == pytest.approx([0.9**5, 0.9**6])


def test_a_target_that_beta_max_keeps_out_of_reach_is_named(tmp_path: Path, datamodule: TensorDataModule) -> None:
    # As a user writes it: TargetRate(target=...) under a KL the model keeps above it at β = 1 (about 5 nats here).
    # β may not pass beta_max=1.0, so the KL never comes down: the callback says so once, naming beta_max.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(tmp_path, UserVAE(), datamodule, [TargetRate(target=0.2, step_size=0.1)], max_steps=130)
    messages = [str(w.message) for w in record if str(w.message).startswith("TargetRate:")]
    assert len(messages) == 1
    assert "β has been held at beta_max=1 for 100 updates" in messages[0]
    assert "Raise `beta_max` (e.g. TargetRate(target=0.2, beta_max=10))" in messages[0]


class _LossOnlyVAE(UserVAE):
    """Returns only the loss from training_step, so TargetRate must find the KL among the logged values."""

    def training_step(self, batch, batch_idx):  # type: ignore[override]
        return super().training_step(batch, batch_idx)["loss"]


def test_target_rate_names_a_missing_monitor(tmp_path: Path, datamodule: TensorDataModule) -> None:
    with pytest.raises(RuntimeError, match=r"training step's output .* or the logged value 'val/kl'"):
        fit(tmp_path, _LossOnlyVAE(), datamodule, [TargetRate(1.0, monitor="val/kl")], max_steps=2)


def test_ddp_target_rate_keeps_every_rank_on_the_same_beta(tmp_path: Path) -> None:
    # Each rank sees its own shard, so the local KLs differ; the controller averages them before deciding.
    out = tmp_path / "records"
    out.mkdir()
    callbacks = [TargetRate(target=4.0, step_size=0.1, tolerance=0.0), Recorder(str(out))]
    dm = TensorDataModule(binary_images(256), batch_size=16)
    ddp_trainer(tmp_path, callbacks, max_steps=12).fit(UserVAE(log_kl=True), dm)
    rank0, rank1 = rank_rows(out)
    assert [r["beta"] for r in rank0] == [r["beta"] for r in rank1]
    assert [r["kl"] for r in rank0] != [r["kl"] for r in rank1]
    assert len({r["beta"] for r in rank0}) > 3  # beta moved


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: TargetRate(target=-1.0), ValueError, r"Expected `target` to be a finite float >= 0, got -1.0"),
        (
            lambda: TargetRate(1.0, step_size=1.5),
            ValueError,
            r"Expected `step_size` to be a finite float > 0 and < 1, got 1.5",
        ),
        (
            lambda: TargetRate(1.0, step_size=0.0),
            ValueError,
            r"Expected `step_size` to be a finite float > 0 and < 1, got 0.0",
        ),
        (
            lambda: TargetRate(1.0, step_size=1.0),
            ValueError,
            r"Expected `step_size` to be a finite float > 0 and < 1, got 1.0",
        ),
        (lambda: TargetRate(float("nan")), ValueError, r"Expected `target` to be a finite float, got nan"),
        (lambda: TargetRate("5"), TypeError, r"Expected `target` to be a finite float, got '5' \(str\)"),
        (lambda: TargetRate(1.0, tolerance=-0.1), ValueError, r"Expected `tolerance` to be a finite float >= 0"),
        (lambda: TargetRate(1.0, beta_min=0.0), ValueError, r"Expected `beta_min` to be a finite float > 0, got 0.0"),
        (lambda: TargetRate(1.0, beta_min=2.0), ValueError, r"Expected `beta_min` <= `beta_max`, got beta_min=2.0"),
        (lambda: TargetRate(1.0, beta_init=5.0), ValueError, r"Expected `beta_init` in \[beta_min, beta_max\]"),
        (lambda: TargetRate(1.0, monitor=""), ValueError, r"Expected `monitor` to be the non-empty name"),
        (lambda: TargetRate(1.0, monitor=None), TypeError, r"Expected `monitor` to be the name of a logged value"),
        (lambda: TargetRate(1.0, update_every=0), ValueError, r"Expected `update_every` to be an int >= 1, got 0"),
        (lambda: TargetRate(1.0, update_every=1.0), TypeError, r"Expected `update_every` to be an int, got 1.0"),
    ],
)
def test_arguments_are_validated(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()
