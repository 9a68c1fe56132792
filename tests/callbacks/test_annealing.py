"""KLAnnealing and CapacityAnnealing (and what every annealing callback shares): values at every step, logging, any
annealable module, validation; a run stopped mid-cycle and resumed with ``ckpt_path=`` logs the same β and λ as a
straight run, and under DDP every rank uses the same β at every step."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from support.annealing import MemoryLogger, Recorder, UserVAE, binary_images, ddp_trainer, fit, rank_rows
from support.modules import tiny_vae, trainer_kwargs
from support.paths import ROOT

from lightning_vae import VAE
from lightning_vae.callbacks import CapacityAnnealing, ExactResume, FreeBits, KLAnnealing, TargetRate
from lightning_vae.cli import VAECLI, build_cli
from lightning_vae.data import TensorDataModule


@pytest.fixture
def datamodule() -> TensorDataModule:
    return TensorDataModule(binary_images(256), batch_size=32)


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
        (
            FreeBits(0.5, mode="total", schedule="linear", end=0.0, length=4),
            "free_bits",
            "train/free_bits",
            [0.5, 0.375, 0.25, 0.125, 0.0, 0.0],
        ),
        (
            TargetRate(target=100.0, step_size=0.1, tolerance=0.0, beta_init=1.0),
            "beta",
            "train/beta",
            [0.9**t for t in range(6)],
        ),  # the KL stays far under 100 nats: beta shrinks by 1 - 0.1 per step
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
    fit(
        tmp_path,
        UserVAE(log_kl=True),
        datamodule,
        callbacks,
        max_steps=11,
        limit_train_batches=4,
        logger=logger,
        log_every_n_steps=3,
    )
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
    others = " and ".join(f"`{a}`" for a in ("beta", "free_bits", "capacity") if a != attribute)
    expected = (
        rf"^{name} needs `{attribute}` on the module, and NotAnnealable has no `{attribute}`\. {name} works with "
        rf"any LightningModule that has the annealing attributes .*\. NotAnnealable also lacks {others}, "
    )
    with pytest.raises(TypeError, match=expected):
        fit(tmp_path, NotAnnealable(), datamodule, [callback], max_steps=1)


def test_capacity_with_gamma_needs_capacity_gamma(tmp_path: Path, datamodule: TensorDataModule) -> None:
    class NoGamma(NotAnnealable):
        beta, free_bits, capacity = 1.0, 0.0, None

    expected = r"^CapacityAnnealing needs `capacity_gamma` on the module, and NoGamma has no `capacity_gamma`\. "
    with pytest.raises(TypeError, match=expected):
        fit(tmp_path, NoGamma(), datamodule, [CapacityAnnealing(c_max=1.0, length=10, gamma=10.0)], max_steps=1)
    # Without gamma the callback keeps the module's γ, and needs only `capacity`.
    fit(tmp_path, NoGamma(), datamodule, [CapacityAnnealing(c_max=1.0, length=10, gamma=None)], max_steps=1)


def test_capacity_needs_the_single_sample_objective(tmp_path: Path, datamodule: TensorDataModule) -> None:
    expected = r"Expected `n_samples` to be 1 for CapacityAnnealing \(.* single-sample ELBO\), got 2; set n_samples=1"
    with pytest.raises(ValueError, match=expected):
        fit(tmp_path, tiny_vae(n_samples=2), datamodule, [CapacityAnnealing(c_max=1.0, length=10)], max_steps=1)


# ---------------------------------------------------------------- TargetRate


# ---------------------------------------------------------------- validation, state, pickling
@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: KLAnnealing("exponential"), ValueError, r"Expected `schedule` to be one of .* got 'exponential'"),
        (lambda: KLAnnealing(start=-0.1), ValueError, r"Expected `start` to be a finite float >= 0, got -0.1"),
        (lambda: KLAnnealing(end=float("inf")), ValueError, r"Expected `end` to be a finite float, got inf"),
        (lambda: KLAnnealing(start=float("nan")), ValueError, r"Expected `start` to be a finite float, got nan"),
        (lambda: KLAnnealing(end="1.0"), TypeError, r"Expected `end` to be a finite float, got '1.0' \(str\)"),
        (
            lambda: KLAnnealing(interval=None),
            TypeError,
            r"Expected `interval` to be one of \('step', 'epoch'\), got None",
        ),
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
        (lambda: CapacityAnnealing(c_max=[5.0], length=10), TypeError, r"Expected `c_max` to be a finite float, got"),
        (lambda: CapacityAnnealing(c_max=5.0, length=-10), ValueError, r"Expected `length` to be an int >= 1, got -10"),
    ],
)
def test_arguments_are_validated(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


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
            "--config=configs/cli/shapes.yaml",
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


ANNEALING_CONFIGS = sorted((ROOT / "configs" / "cli" / "annealing").glob("*.yaml"))


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
            "--config=configs/cli/shapes.yaml",
            f"--config={config}",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.n_train=64",
            "--data.init_args.n_val=32",
        ],
    )
    # `callbacks+:` appends: the base config's callbacks stay, the schedule's come after them.
    wanted = yaml.safe_load(config.read_text())["trainer"]["callbacks+"]
    base = yaml.safe_load((ROOT / "configs" / "cli" / "shapes.yaml").read_text())["trainer"]["callbacks"]
    ours = [
        cb
        for cb in cli.trainer.callbacks
        if type(cb).__module__.startswith("lightning_vae.callbacks") and not isinstance(cb, ExactResume)
    ]  # ExactResume: added to every trainer by the entry point
    expected_paths = [c["class_path"] for c in base if c["class_path"].startswith("lightning_vae.callbacks")]
    expected_paths += [c["class_path"] for c in wanted]
    assert [f"lightning_vae.callbacks.{type(cb).__name__}" for cb in ours] == expected_paths
    built = ours[len(ours) - len(wanted) :]
    classes = {"KLAnnealing": KLAnnealing, "CapacityAnnealing": CapacityAnnealing, "FreeBits": FreeBits}
    classes["TargetRate"] = TargetRate
    for cb, spec in zip(built, wanted):
        expected = classes[type(cb).__name__](**spec["init_args"])  # what the YAML describes, built by hand
        public = lambda c: {k: v for k, v in vars(c).items() if not k.startswith("_")}  # noqa: E731
        assert public(cb) == public(expected)


# ---------------------------------------------------------------- restart safety: resume and DDP ranks
STEPS, BATCHES_PER_EPOCH = 20, 6


def _callbacks(setup: str) -> list[Callback]:
    if setup == "step":
        # Period 8: the stop at step 9 falls in the rising half of the second cycle, and in the middle of epoch 1.
        return [
            KLAnnealing("cyclical", length=16, n_cycles=2, ratio=0.5),
            FreeBits(1.0, schedule="linear", end=0.0, length=12),
        ]
    # Stops in epoch 1 or after it fall in the middle of both ramps (beta 1/3 then 2/3, lambda 0.375 then 0.125).
    return [
        KLAnnealing("linear", length=3, interval="epoch"),
        FreeBits(0.5, schedule="cosine", end=0.0, length=3, interval="epoch"),
    ]


def _trainer(tmp_path: Path, max_steps: int, callbacks: list[Callback], logger: MemoryLogger) -> Trainer:
    return Trainer(
        **trainer_kwargs(
            tmp_path,
            max_steps=max_steps,
            max_epochs=-1,
            limit_train_batches=BATCHES_PER_EPOCH,
            limit_val_batches=0,
            log_every_n_steps=1,
            logger=logger,
            callbacks=callbacks,
        )
    )


@pytest.mark.parametrize(("setup", "middle"), [("step", 9), ("epoch", 9), ("epoch", 2 * BATCHES_PER_EPOCH)])
def test_resume_mid_cycle_logs_identical_beta_and_lambda(tmp_path: Path, setup: str, middle: int) -> None:
    dm = TensorDataModule(binary_images(256), batch_size=16)

    straight, straight_log = Recorder(), MemoryLogger()
    _trainer(tmp_path / "straight", STEPS, [*_callbacks(setup), straight], straight_log).fit(tiny_vae(), dm)

    first, first_log = Recorder(), MemoryLogger()
    trainer = _trainer(tmp_path / "first", middle, [*_callbacks(setup), first], first_log)
    trainer.fit(tiny_vae(), dm)
    ckpt = tmp_path / "middle.ckpt"
    trainer.save_checkpoint(ckpt)

    # A new process would build everything again: fresh module, fresh callbacks, then ckpt_path=.
    second, second_log = Recorder(), MemoryLogger()
    _trainer(tmp_path / "second", STEPS, [*_callbacks(setup), second], second_log).fit(tiny_vae(), dm, ckpt_path=ckpt)

    assert straight.column("step") == list(range(STEPS))
    assert first.column("step") + second.column("step") == list(range(STEPS))
    for name in ("beta", "free_bits"):
        assert first.column(name) + second.column(name) == straight.column(name), name
    for key in ("train/beta", "train/free_bits"):
        logged = straight_log.series(key)
        assert len(logged) == STEPS
        assert {**first_log.series(key), **second_log.series(key)} == logged, key
    # the schedules really moved across the stop
    assert len(set(straight.column("beta"))) > 2 and len(set(straight.column("free_bits"))) > 2


# ---------------------------------------------------------------- DDP


def test_ddp_ranks_use_the_same_scheduled_beta_and_lambda(tmp_path: Path) -> None:
    out = tmp_path / "records"
    out.mkdir()
    callbacks = [
        KLAnnealing("cyclical", length=8, n_cycles=2, ratio=0.5),
        FreeBits(0.5, schedule="linear", end=0.0, length=4),
        Recorder(str(out)),
    ]
    ddp_trainer(tmp_path, callbacks, max_steps=10).fit(tiny_vae(), TensorDataModule(binary_images(256), batch_size=16))
    rank0, rank1 = rank_rows(out)
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == list(range(10))
    assert [r["beta"] for r in rank0] == [r["beta"] for r in rank1] == [0, 0.5, 1, 1, 0, 0.5, 1, 1, 1, 1]
    assert [r["free_bits"] for r in rank0] == [r["free_bits"] for r in rank1] == [0.5, 0.375, 0.25, 0.125] + [0.0] * 6
