"""KLAnnealing, CapacityAnnealing and TargetRate: values at every step, logging, any annealable module, validation."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from support.annealing import MemoryLogger, Recorder, UserVAE, binary_images
from support.modules import tiny_vae, trainer_kwargs
from support.paths import ROOT

from lightning_vae import VAE
from lightning_vae.callbacks import CapacityAnnealing, ExactResume, FreeBits, KLAnnealing, TargetRate
from lightning_vae.cli import VAECLI, build_cli
from lightning_vae.data import TensorDataModule


@pytest.fixture
def datamodule() -> TensorDataModule:
    return TensorDataModule(binary_images(256), batch_size=32)


def fit(tmp_path: Path, module: LightningModule, dm: LightningDataModule, callbacks: list, **overrides) -> Trainer:
    kwargs = dict(max_epochs=-1, limit_val_batches=0, log_every_n_steps=1, callbacks=callbacks)
    kwargs.update(overrides)
    trainer = Trainer(**trainer_kwargs(tmp_path, **kwargs))
    trainer.fit(module, dm)
    return trainer


# ---------------------------------------------------------------- KLAnnealing on the VAE
def test_kl_annealing_sets_logs_and_shows_beta_every_step(tmp_path: Path, datamodule: TensorDataModule) -> None:
    rec, logger = Recorder(), MemoryLogger()
    callbacks = [KLAnnealing("cyclical", length=8, n_cycles=2, ratio=0.5), rec]
    trainer = fit(tmp_path, tiny_vae(), datamodule, callbacks, max_steps=10, limit_train_batches=4, logger=logger)
    # Fu et al. 2019 with T = 8, M = 2, R = 0.5: period 4, rising over 2 steps (0, 1/2, 1), held at 1 from t = T.
    expected = [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert rec.column("step") == list(range(10))
    assert rec.column("beta") == expected
    # The VAE logs train/beta itself, the callback too: one value per step, the one the loss used.
    assert list(logger.series("train/beta").values()) == pytest.approx(expected)
    assert "train/beta" in trainer.progress_bar_metrics


def test_kl_annealing_per_epoch(tmp_path: Path, datamodule: TensorDataModule) -> None:
    rec = Recorder()
    callbacks = [KLAnnealing("linear", start=0.0, end=1.0, length=2, interval="epoch"), rec]
    fit(tmp_path, tiny_vae(), datamodule, callbacks, max_epochs=3, limit_train_batches=3)
    assert rec.column("epoch") == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert rec.column("beta") == [0.0] * 3 + [0.5] * 3 + [1.0] * 3


def test_capacity_annealing_drives_the_vae_capacity_objective(tmp_path: Path, datamodule: TensorDataModule) -> None:
    rec, logger = Recorder(), MemoryLogger()
    callbacks = [CapacityAnnealing(c_max=2.0, length=4, gamma=10.0), rec]
    trainer = fit(tmp_path, tiny_vae(), datamodule, callbacks, max_steps=6, limit_train_batches=3, logger=logger)
    expected = [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]  # C_t = 2 min(t / 4, 1)
    assert rec.column("capacity") == expected
    assert set(rec.column("capacity_gamma")) == {10.0}
    assert list(logger.series("train/capacity").values()) == pytest.approx(expected)
    # Burgess et al. 2018: the loss of every step is recon + gamma |KL - C_t|
    for step, metrics in enumerate(logger.steps[s] for s in sorted(logger.steps)):
        expected_loss = metrics["train/recon"] + 10.0 * abs(metrics["train/kl"] - expected[step])
        assert metrics["train/loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert "train/capacity" in trainer.progress_bar_metrics


# ---------------------------------------------------------------- any module that keeps the protocol
@pytest.mark.parametrize(
    ("callback", "attribute", "key", "expected"),
    [
        (KLAnnealing("linear", length=4), "beta", "train/beta", [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
        (CapacityAnnealing(c_max=2.0, length=4, gamma=10.0), "capacity", "train/capacity", [0, 0.5, 1, 1.5, 2, 2]),
        (FreeBits(0.5, mode="total", schedule="linear", end=0.0, length=4), "free_bits", "train/free_bits",
         [0.5, 0.375, 0.25, 0.125, 0.0, 0.0]),
        (TargetRate(target=100.0, step_size=0.1, tolerance=0.0, beta_init=1.0), "beta", "train/beta",
         [0.9**t for t in range(6)]),  # the KL stays far under 100 nats: beta shrinks by 1 - 0.1 per step
    ],
    ids=["KLAnnealing", "CapacityAnnealing", "FreeBits", "TargetRate"],
)
def test_every_callback_trains_a_module_that_is_not_a_vae(
    tmp_path: Path, datamodule: TensorDataModule, callback, attribute: str, key: str, expected: list[float]
) -> None:
    module = UserVAE(log_kl=isinstance(callback, TargetRate))
    assert not isinstance(module, VAE)
    rec, logger = Recorder(), MemoryLogger()
    fit(tmp_path, module, datamodule, [callback, rec], max_steps=6, limit_train_batches=3, logger=logger)
    assert rec.column(attribute) == pytest.approx(expected, rel=1e-12)
    assert list(logger.series(key).values()) == pytest.approx(expected, rel=1e-6)
    # the raw KL is logged for this module (by the module itself, or by FreeBits from the step's output)
    if isinstance(callback, (FreeBits, TargetRate)):
        assert len(logger.series("train/kl")) == 6
    if isinstance(callback, FreeBits):
        assert set(rec.column("free_bits_mode")) == {"total"}
    if isinstance(callback, CapacityAnnealing):
        terms = module.last_terms  # the last step used C = 2
        assert terms["loss"] == pytest.approx(terms["recon"] + 10.0 * abs(terms["kl"] - 2.0), rel=1e-6)


def test_unchanged_values_are_still_logged_at_every_step_of_every_epoch(tmp_path: Path, datamodule) -> None:
    # The callbacks call self.log only when a value changes; Lightning must still write it at every step.
    logger = MemoryLogger()
    callbacks = [KLAnnealing("constant", end=2.0), FreeBits(0.25)]
    trainer = fit(tmp_path, UserVAE(), datamodule, callbacks, max_steps=7, limit_train_batches=3, logger=logger)
    assert list(logger.series("train/beta").values()) == [2.0] * 7
    assert list(logger.series("train/free_bits").values()) == [0.25] * 7
    assert trainer.progress_bar_metrics["train/beta"] == 2.0


def test_rows_written_every_n_steps_hold_the_value_of_their_step(tmp_path: Path, datamodule) -> None:
    # log_every_n_steps=3: Lightning writes after steps 2, 5, 8 (epochs of 4 steps); the callbacks log only then.
    logger = MemoryLogger()
    callbacks = [KLAnnealing("linear", length=8), FreeBits(0.4)]
    fit(tmp_path, UserVAE(log_kl=True), datamodule, callbacks, max_steps=11, limit_train_batches=4, logger=logger,
        log_every_n_steps=3)
    assert logger.series("train/beta") == {2: 0.25, 5: 0.625, 8: 1.0}  # t / 8
    assert logger.series("train/free_bits") == pytest.approx({2: 0.4, 5: 0.4, 8: 0.4})
    assert sorted(logger.series("train/kl")) == [2, 5, 8]


class NotAnnealable(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0].flatten(1)).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("callback", "attribute"),
    [(KLAnnealing(), "beta"), (CapacityAnnealing(c_max=1.0, length=10), "capacity"), (TargetRate(1.0), "beta")],
)
def test_a_module_without_the_protocol_is_rejected(tmp_path: Path, datamodule, callback, attribute: str) -> None:
    name = type(callback).__name__
    with pytest.raises(TypeError, match=rf"{name} needs a LightningModule with a float attribute `{attribute}`"):
        fit(tmp_path, NotAnnealable(), datamodule, [callback], max_steps=1)


def test_capacity_needs_the_single_sample_objective(tmp_path: Path, datamodule: TensorDataModule) -> None:
    with pytest.raises(ValueError, match="CapacityAnnealing needs the single-sample objective, got .*n_samples=2"):
        fit(tmp_path, tiny_vae(n_samples=2), datamodule, [CapacityAnnealing(c_max=1.0, length=10)], max_steps=1)


# ---------------------------------------------------------------- TargetRate
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


# ---------------------------------------------------------------- validation, state, pickling
@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: KLAnnealing("exponential"), ValueError, r"Expected `schedule` to be one of .* got 'exponential'"),
        (lambda: KLAnnealing(start=-0.1), ValueError, r"Expected `start` to be a finite float >= 0, got -0.1"),
        (lambda: KLAnnealing(end=float("inf")), ValueError, r"Expected `end` to be a finite float >= 0, got inf"),
        (lambda: KLAnnealing(length=0), ValueError, r"Expected `length` to be an int >= 1, got 0"),
        (lambda: KLAnnealing(delay=-3), ValueError, r"Expected `delay` to be an int >= 0, got -3"),
        (lambda: KLAnnealing(interval="batch"), ValueError, r"Expected `interval` to be one of .*, got 'batch'"),
        (lambda: KLAnnealing(n_cycles=0), ValueError, r"Expected `n_cycles` to be an int >= 1, got 0"),
        (lambda: KLAnnealing(ratio=2.0), ValueError, r"Expected `ratio` to be a finite float > 0 and <= 1, got 2.0"),
        (lambda: KLAnnealing(cycle_shape="step"), ValueError, r"Expected `cycle_shape` to be one of .*, got 'step'"),
        (lambda: KLAnnealing(steepness=0.0), ValueError, r"Expected `steepness` to be a finite float > 0, got 0.0"),
        (lambda: KLAnnealing(prog_bar="yes"), TypeError, r"Expected `prog_bar` to be a bool, got 'yes'"),
        (lambda: CapacityAnnealing(c_max=-1.0, length=10), ValueError, r"Expected `c_max` to be .* >= 0, got -1.0"),
        (lambda: CapacityAnnealing(c_max=5.0, length=10, gamma=0.0), ValueError, r"Expected `gamma` .* > 0, got 0.0"),
        (lambda: CapacityAnnealing(c_max=5.0, length=-10), ValueError, r"Expected `length` to be an int >= 1, got -10"),
        (lambda: TargetRate(target=-1.0), ValueError, r"Expected `target` to be a finite float >= 0, got -1.0"),
        (lambda: TargetRate(1.0, step_size=1.5), ValueError, r"Expected `step_size` to be in \(0, 1\), got 1.5"),
        (lambda: TargetRate(1.0, step_size=0.0), ValueError, r"Expected `step_size` to be a finite float > 0, got 0.0"),
        (lambda: TargetRate(1.0, tolerance=-0.1), ValueError, r"Expected `tolerance` to be a finite float >= 0"),
        (lambda: TargetRate(1.0, beta_min=0.0), ValueError, r"Expected `beta_min` to be a finite float > 0, got 0.0"),
        (lambda: TargetRate(1.0, beta_min=2.0), ValueError, r"Expected `beta_min` <= `beta_max`, got beta_min=2.0"),
        (lambda: TargetRate(1.0, beta_init=5.0), ValueError, r"Expected `beta_init` in \[beta_min, beta_max\]"),
        (lambda: TargetRate(1.0, monitor=""), ValueError, r"Expected `monitor` to be the non-empty name"),
        (lambda: TargetRate(1.0, update_every=0), ValueError, r"Expected `update_every` to be an int >= 1, got 0"),
    ],
)
def test_arguments_are_validated(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


class _LossOnlyVAE(UserVAE):
    """Returns only the loss from training_step, so TargetRate must find the KL among the logged values."""

    def training_step(self, batch, batch_idx):  # type: ignore[override]
        return super().training_step(batch, batch_idx)["loss"]


def test_target_rate_names_a_missing_monitor(tmp_path: Path, datamodule: TensorDataModule) -> None:
    with pytest.raises(RuntimeError, match=r"training step's output .* or the logged value 'val/kl'"):
        fit(tmp_path, _LossOnlyVAE(), datamodule, [TargetRate(1.0, monitor="val/kl")], max_steps=2)


def test_state_keys_pickling_and_a_changed_schedule_warns() -> None:
    cb = KLAnnealing("cosine", length=100)
    assert cb.state_key == "KLAnnealing"
    assert CapacityAnnealing(c_max=1.0, length=5).state_key == "CapacityAnnealing"
    assert TargetRate(1.0).state_key == "TargetRate"
    clone = pickle.loads(pickle.dumps(cb))
    assert clone.schedule == cb.schedule and clone.interval == "step"
    clone.load_state_dict(cb.state_dict())  # same settings: silent
    other = KLAnnealing("linear", length=100)
    with pytest.warns(UserWarning, match="the checkpoint was trained with schedule"):
        other.load_state_dict(cb.state_dict())
    other.load_state_dict({})  # a checkpoint without this state loads


# ---------------------------------------------------------------- command line
def test_short_class_names_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cli = build_cli(
        args=[
            "fit",
            "--config=configs/shapes.yaml",
            "--trainer.callbacks+=KLAnnealing",
            "--trainer.callbacks.schedule=cyclical",
            "--trainer.callbacks.length=8",
            "--trainer.callbacks.n_cycles=2",
            "--trainer.callbacks+=FreeBits",
            "--trainer.callbacks.free_bits=0.25",
            "--trainer.fast_dev_run=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.n_train=64",
            "--data.init_args.n_val=32",
            "--data.init_args.batch_size=16",
        ]
    )
    annealing = [cb for cb in cli.trainer.callbacks if isinstance(cb, KLAnnealing)]
    assert len(annealing) == 1 and annealing[0].schedule.kind == "cyclical" and annealing[0].schedule.length == 8
    assert cli.model.beta == 0.5  # cyclical, T = 8, M = 2, R = 0.5: period 4, rising over 2 steps; t = 1 is halfway
    assert cli.model.free_bits == 0.25


ANNEALING_CONFIGS = sorted((ROOT / "configs" / "annealing").glob("*.yaml"))


def test_every_schedule_has_a_config() -> None:
    names = {p.stem for p in ANNEALING_CONFIGS}
    assert {"constant", "linear", "logistic", "cosine", "cyclical", "capacity", "free_bits", "target_rate"} <= names


@pytest.mark.parametrize("config", ANNEALING_CONFIGS, ids=lambda p: p.stem)
def test_annealing_configs_build_their_callbacks(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cli = VAECLI(
        VAE,
        LightningDataModule,
        subclass_mode_data=True,
        run=False,
        args=[
            "--config=configs/shapes.yaml",
            f"--config={config}",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.n_train=64",
            "--data.init_args.n_val=32",
        ],
    )
    wanted = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    built = [
        cb
        for cb in cli.trainer.callbacks
        if type(cb).__module__.startswith("lightning_vae.callbacks") and not isinstance(cb, ExactResume)
    ]  # ExactResume: added to every trainer by the entry point
    assert [f"lightning_vae.callbacks.{type(cb).__name__}" for cb in built] == [c["class_path"] for c in wanted]
    classes = {"KLAnnealing": KLAnnealing, "CapacityAnnealing": CapacityAnnealing, "FreeBits": FreeBits}
    classes["TargetRate"] = TargetRate
    for cb, spec in zip(built, wanted):
        expected = classes[type(cb).__name__](**spec["init_args"])  # what the YAML describes, built by hand
        public = lambda c: {k: v for k, v in vars(c).items() if not k.startswith("_")}  # noqa: E731
        assert public(cb) == public(expected)
