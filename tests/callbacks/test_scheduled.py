"""The base of the scheduled callbacks (callbacks/scheduled.py): the epoch counted from the optimizer step, one logged
value per step with ``self.log`` called only when a logger receives it, the value of a step or an epoch set on the
module (or on the objective that declares the weight), the protocol check, and the state kept in a checkpoint."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from lightning_vae.callbacks.scheduled import ScheduledAttribute, StepValueLogger, epoch_of_step, weight_owner
from lightning_vae.functional.schedules import Schedule


class Beta(ScheduledAttribute):
    attribute = "beta"
    log_key = "train/beta"


def _trainer(step: int = 0, batches: Any = 10, accumulate: int = 1, epoch: int = 0, logs: bool = True) -> Any:
    """The trainer attributes the callbacks read; ``logs``: whether this step's values reach a logger."""
    connector = SimpleNamespace(should_update_logs=logs)
    return SimpleNamespace(
        global_step=step,
        num_training_batches=batches,
        accumulate_grad_batches=accumulate,
        current_epoch=epoch,
        _logger_connector=connector,
    )


class _Module:
    """Records what ``log`` receives; has the attributes of the annealing protocol."""

    def __init__(self) -> None:
        self.beta, self.free_bits, self.capacity = 1.0, 0.0, None
        self.logged: list[tuple[str, float, dict]] = []

    def log(self, key: str, value: torch.Tensor, **kwargs: Any) -> None:
        self.logged.append((key, float(value), kwargs))


@pytest.mark.parametrize(
    ("batches", "accumulate", "step", "expected"),
    [(10, 1, 0, 0), (10, 1, 9, 0), (10, 1, 10, 1), (10, 1, 35, 3), (10, 3, 3, 0), (10, 3, 4, 1), (10, 3, 8, 2)],
)
def test_the_epoch_is_the_optimizer_step_over_the_steps_per_epoch(batches, accumulate, step, expected) -> None:
    # ceil(batches / accumulate) optimizer steps per epoch: 10 batches accumulated by 3 are 4 steps
    assert epoch_of_step(_trainer(step, batches, accumulate, epoch=99)) == expected
    assert expected == step // math.ceil(batches / accumulate)


def test_an_unknown_epoch_length_falls_back_to_the_trainers_epoch() -> None:
    assert epoch_of_step(_trainer(step=50, batches=float("inf"), epoch=4)) == 4
    assert epoch_of_step(_trainer(step=50, batches=0, epoch=2)) == 2


def test_step_values_are_logged_at_an_epochs_start_and_when_changed_on_a_logging_step() -> None:
    module, log = _Module(), StepValueLogger("train/beta", prog_bar=True)
    log(_trainer(logs=False), module, 0.5)  # the first call of an epoch logs, whatever the step
    log(_trainer(logs=True), module, 0.5)  # unchanged: not again
    log(_trainer(logs=False), module, 0.75)  # changed, but no logger reads this step
    log(_trainer(logs=True), module, 0.75)  # changed and read
    log.reset()  # a new epoch
    log(_trainer(logs=False), module, 0.75)
    assert [(k, v) for k, v, _ in module.logged] == [("train/beta", 0.5), ("train/beta", 0.75), ("train/beta", 0.75)]
    assert module.logged[0][2] == {"prog_bar": True, "on_step": True, "on_epoch": False}


def test_the_value_of_the_step_or_the_epoch_is_set_on_the_module() -> None:
    schedule = Schedule("linear", start=0.0, end=1.0, length=4)
    module = _Module()
    by_step, by_epoch = Beta(schedule), Beta(schedule, interval="epoch")
    trainer = _trainer(step=25, batches=10)  # epoch 2
    assert by_step.apply(trainer, module) == 1.0 and module.beta == 1.0  # step 25 is past the ramp
    assert by_epoch.apply(trainer, module) == pytest.approx(0.5) and module.beta == pytest.approx(0.5)
    by_step.on_train_start(trainer, module)
    for step in range(4):
        by_step.on_train_batch_start(_trainer(step=step), module, None, step)
        assert module.beta == pytest.approx(step / 4)
    assert [v for _, v, _ in module.logged] == pytest.approx([0.0, 0.25, 0.5, 0.75])  # every step read


def test_a_weight_the_objective_declares_is_set_on_the_objective() -> None:
    objective = SimpleNamespace(weights=("gamma",), gamma=0.0)
    module = SimpleNamespace(objective=objective, beta=1.0)
    assert weight_owner(module, "beta") is module
    assert weight_owner(module, "gamma") is objective
    assert weight_owner(module, "delta") is module  # neither declares it: the module
    gamma = Beta(Schedule("constant", end=3.0))
    gamma.attribute = "gamma"
    gamma.check_module(module)  # the objective declares it: no protocol needed
    gamma.apply(_trainer(), module)
    assert objective.gamma == 3.0 and not hasattr(module, "gamma")


def test_a_module_without_the_attribute_is_refused_at_fit() -> None:
    beta = Beta(Schedule())
    beta.setup(_trainer(), SimpleNamespace(), "validate")  # only fit checks
    with pytest.raises(TypeError, match=r"Beta needs `beta` on the module, and SimpleNamespace has no `beta`"):
        beta.setup(_trainer(), SimpleNamespace(free_bits=0.0), "fit")


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"Expected `interval` to be one of \('step', 'epoch'\), got 'batch'"):
        Beta(Schedule(), interval="batch")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Expected `prog_bar` to be a bool, got 1 \(int\)"):
        Beta(Schedule(), prog_bar=1)  # type: ignore[arg-type]


def test_the_state_is_the_settings_and_a_different_schedule_is_warned_about() -> None:
    schedule = Schedule("cosine", start=0.1, end=0.9, length=7)
    beta = Beta(schedule, interval="epoch")
    state = beta.state_dict()
    assert state == {
        "schedule": {"kind": "cosine", "start": 0.1, "end": 0.9, "length": 7, "delay": 0, "n_cycles": 4,
                     "ratio": 0.5, "shape": "linear", "steepness": None, "midpoint": None},
        "interval": "epoch",
    }  # fmt: skip
    Beta(schedule, interval="epoch").load_state_dict(state)  # the same settings: silent
    Beta(schedule).load_state_dict({})  # an older checkpoint without the record: silent
    with pytest.warns(UserWarning, match=r"Beta: the checkpoint was trained with schedule .*'cosine'.*continuing"):
        Beta(Schedule("linear"), interval="epoch").load_state_dict(state)
    with pytest.warns(UserWarning, match=r"interval='epoch'\); continuing with .* \(interval='step'\)"):
        Beta(schedule).load_state_dict(state)
    clone = pickle.loads(pickle.dumps(beta))
    assert clone.schedule == schedule and clone.interval == "epoch"
