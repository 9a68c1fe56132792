"""The training step's common case (``TrainingStep._common_step``): most steps of a CPU run.

A step that is not logged, checks no data, has no free bits, capacity or group weights, one sample, the guard
reading the loss on the spot and no autocast takes one function that computes the loss alone. These tests hold
it to the fast and general paths: the same loss, KL and gradients; the same checks and errors; the same run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import DistributionEncoder, tiny_vae, trainer_kwargs
from test_module import DATA, PARAMS_PER_ELEMENT
from torch import Tensor, nn

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule
from lightning_vae.guard import NonFiniteError
from lightning_vae.hooks.training import TrainingStep
from lightning_vae.nets import MLPDecoder, MLPEncoder


class QuietTrainer:
    """The trainer attributes a training step reads, for a step whose values reach no logger."""

    def __init__(self) -> None:
        self.global_step, self.current_epoch, self.num_training_batches = 123, 4, 1000
        self._logger_connector = type("Connector", (), {"should_update_logs": False})()


def _quiet(vae: VAE, x: Tensor | None = None) -> VAE:
    """``vae`` after its first steps (the fast path decided, the data's range known from the first batch's full
    check, the divergence rule's scale set), in the middle of an epoch."""
    vae._trainer = QuietTrainer()  # type: ignore[assignment]
    vae.data_check(vae.model.likelihood, torch.rand(4, 1, 8, 8).round() if x is None else x, "raise")
    vae.data_check.seen = 11
    vae.guard.load_state_dict({"scale": 1000.0, "calibrated": 1})
    return vae


@contextmanager
def counting_common_steps() -> Iterator[list[int]]:
    """Count the calls of ``_common_step`` (each one a step it took)."""
    calls: list[int] = []
    original = TrainingStep._common_step

    def counted(self: TrainingStep, x: Tensor, batch_idx: int) -> Any:
        calls.append(batch_idx)
        return original(self, x, batch_idx)

    with mock.patch.object(TrainingStep, "_common_step", counted):
        yield calls


def _vae(likelihood: str = "bernoulli", log_var_bias: float = 0.0, **settings: Any) -> VAE:
    torch.manual_seed(0)
    encoder = MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(32,))
    per_element = PARAMS_PER_ELEMENT.get(likelihood, 1)
    decoder = MLPDecoder(4, (1, 8, 8), hidden_sizes=(32,), params_per_element=per_element)
    vae = VAE(encoder, decoder, likelihood=likelihood, **settings)
    if log_var_bias:
        with torch.no_grad():  # push the log-variances out of the clamp's identity range
            encoder.head.bias[4:] += log_var_bias
    vae._fast = True
    vae._shapes_fixed = True
    return _quiet(vae, DATA[likelihood]())


def _gradients(vae: VAE) -> list[Tensor]:
    return [p.grad.clone() for p in vae.parameters() if p.grad is not None]


@pytest.mark.parametrize("likelihood", sorted(DATA))
@pytest.mark.parametrize("beta", [1.0, 0.25])
@pytest.mark.parametrize("log_var_bias", [0.0, 13.0, -25.0], ids=["inside", "clamped-high", "clamped-low"])
def test_the_common_step_agrees_with_the_general_path(likelihood: str, beta: float, log_var_bias: float) -> None:
    """Loss, returned KL and gradients equal the general path's (distribution objects, the soft clamp always) to
    float32 rounding, inside the clamp's identity range and far outside it on both sides."""
    vae = _vae(likelihood, log_var_bias, beta=beta)
    x = DATA[likelihood]()
    with counting_common_steps() as calls:
        vae.zero_grad()
        torch.manual_seed(7)
        out = vae.training_step(x, 5)
        assert out is not None
        out["loss"].backward()
    assert calls == [5]
    common = _gradients(vae)
    vae._fast = False
    vae.zero_grad()
    torch.manual_seed(7)
    general = vae._training_terms(x, lambda: "test", False)
    general.loss.backward()
    torch.testing.assert_close(out["loss"], general.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["kl"], general.kl.detach(), rtol=1e-6, atol=1e-6)
    assert not out["kl"].requires_grad
    assert len(common) == len(_gradients(vae)) > 0
    for a, b in zip(common, _gradients(vae)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


NOT_COMMON = {
    "free bits": lambda vae: setattr(vae, "free_bits", 0.5),
    "capacity": lambda vae: setattr(vae, "capacity", 1.0),
    "group weights": lambda vae: setattr(vae, "group_betas", {"z": 0.5}),
    "importance samples": lambda vae: setattr(vae, "n_samples", 3),
    "skip policy": lambda vae: setattr(vae.guard, "policy", "skip"),
    "deferred guard": lambda vae: setattr(vae.guard, "deferred", True),
    # the accelerator schedule (a CPU run checks every batch, in the common step too)
    "data check due": lambda vae: (
        setattr(vae.data_check, "every_cpu_batch", False),
        setattr(vae.data_check, "seen", 50),
    ),
    "first data checks": lambda vae: (
        setattr(vae.data_check, "every_cpu_batch", False),
        setattr(vae.data_check, "seen", 3),
    ),
    "data out of range": lambda vae: setattr(vae.data_check, "_range", (0.5, 1.0)),  # rand().round() holds zeros
    "logging step": lambda vae: (  # its logging is not what is tested here
        setattr(vae._trainer._logger_connector, "should_update_logs", True),
        setattr(vae, "_log_step", lambda terms, batch_size: None),
    ),
    "no trainer": lambda vae: (setattr(vae, "_trainer", None), setattr(vae, "_log_step", lambda terms, n: None)),
    "general path": lambda vae: setattr(vae, "_fast", False),
}


@pytest.mark.parametrize("case", sorted(NOT_COMMON))
def test_the_common_step_is_taken_only_where_it_applies(case: str) -> None:
    vae = _vae(free_bits=0.0)
    NOT_COMMON[case](vae)
    with counting_common_steps() as calls:
        out = vae.training_step(torch.rand(4, 1, 8, 8).round(), 7)
    assert calls == [] and out is not None and torch.isfinite(out["loss"])


def test_the_common_step_hands_the_first_loss_to_the_divergence_rule() -> None:
    """Until the guard has its scale (the run's first step), a finite loss of the common step goes to the guard."""
    vae = _vae()
    vae.guard.load_state_dict({"scale": 0.0, "calibrated": 0})
    x = torch.rand(4, 1, 8, 8).round()
    with counting_common_steps() as calls:
        first = float(vae.training_step(x, 100)["loss"].detach())  # no epoch edge: not logged
        vae.training_step(x, 101)
    assert calls == [100, 101] and vae.guard.calibrated == 1 and vae.guard.scale == abs(first)
    assert vae.guard.limit == 1e4 * max(abs(first), 1.0)


def test_the_common_step_is_not_taken_under_autocast() -> None:
    vae = _vae()
    with counting_common_steps() as calls, torch.autocast("cpu", dtype=torch.bfloat16):
        out = vae.training_step(torch.rand(4, 1, 8, 8).round(), 7)
    assert calls == [] and out is not None and out["loss"].dtype == torch.float32


def test_the_common_step_checks_the_range_of_every_cpu_batch() -> None:
    """On the CPU the common step tests every batch against the likelihood's range (one fused min/max): a batch
    out of range anywhere, not only on a scheduled one, leaves it for the full check, which names it."""
    vae = _vae()
    x = torch.rand(4, 1, 8, 8).round()
    with counting_common_steps() as calls:
        for i in range(11, 24):
            vae.training_step(x, i)
        with pytest.raises(ValueError, match=r"expects targets in \[0, 1\].*global step 123, epoch 4, batch 24"):
            vae.training_step(torch.full((4, 1, 8, 8), 3.0), 24)
    assert calls == list(range(11, 24))  # every good batch took it; the bad one did not


class NarrowHeads(nn.Module):
    """An encoder whose outputs are float16 or bfloat16: not the common case's float32."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.dtype = MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(16,)), dtype

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_var = self.net(x)
        return loc.to(self.dtype), log_var.to(self.dtype)


@pytest.mark.parametrize(
    "encoder", [DistributionEncoder, lambda: NarrowHeads(torch.float16), lambda: NarrowHeads(torch.bfloat16)]
)
def test_other_encoder_outputs_leave_the_common_step_for_the_fast_or_general_path(encoder: Any) -> None:
    torch.manual_seed(0)
    vae = VAE(encoder(), MLPDecoder(4, (1, 8, 8), hidden_sizes=(16,)), latent_dim=4)
    vae._fast, vae._shapes_fixed = True, True
    _quiet(vae)
    x = torch.rand(4, 1, 8, 8).round()
    torch.manual_seed(3)
    with counting_common_steps() as calls:
        out = vae.training_step(x, 7)
    assert calls == [7] and out is not None and torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
    out["loss"].backward()
    vae._fast = False
    torch.manual_seed(3)
    general = vae._training_terms(x, lambda: "test", False)
    torch.testing.assert_close(out["loss"], general.loss, rtol=1e-2, atol=1e-2)  # half-precision heads: their rounding


def test_a_non_finite_loss_in_the_common_step_raises_with_the_diagnosis() -> None:
    vae = _vae()
    x = torch.rand(4, 1, 8, 8).round()
    with torch.no_grad():
        vae.model.decoder.head.bias[5] = float("nan")  # the data pass their check: the loss shows the fault
    with counting_common_steps() as calls, pytest.raises(NonFiniteError) as err:
        vae.training_step(x, 17)
    assert calls == [17]
    message = str(err.value)
    assert "global step 123 (epoch 4, batch 17)" in message
    assert "parameters ['model.decoder.head.bias']" in message and "already non-finite" in message
    assert "reconstruction term" in message and "resume from the last checkpoint" in message


def test_nan_data_in_any_cpu_batch_is_named_by_the_data_check() -> None:
    vae = _vae()
    x = torch.rand(4, 1, 8, 8).round()
    x[2, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"1 NaN or infinite values.*global step 123, epoch 4, batch 17"):
        vae.training_step(x, 17)


def test_a_non_finite_kl_in_the_common_step_names_the_latent_dimension() -> None:
    vae = _vae()
    with torch.no_grad():
        vae.model.encoder.head.weight[1].fill_(float("inf"))  # loc of latent dimension 1
    with pytest.raises(NonFiniteError, match=r"the KL term is non-finite in latent dimensions \[1\]"):
        vae.training_step(torch.rand(4, 1, 8, 8).round(), 9)


def _through_the_fast_path(self: TrainingStep, x: Tensor, batch_idx: int) -> Any:
    """What the step would do without its common case (the data check counted once, as there)."""
    self.data_check.seen -= 1
    return self._finish(x, batch_idx, False, self._training_terms(x, lambda: "test", False))


def test_a_run_is_the_same_with_and_without_the_common_step(tmp_path: Path) -> None:
    """Two epochs of 16 batches, logged every 5 steps: the common step takes most of them, and the weights at
    the end equal those of the same run through the fast path alone."""
    data = torch.rand(128, 1, 8, 8).round()

    def fit(common: bool) -> dict[str, Tensor]:
        torch.manual_seed(0)
        vae = tiny_vae()
        trainer = Trainer(
            **trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=None, limit_val_batches=0),
            log_every_n_steps=5,
            num_sanity_val_steps=0,
        )
        dm = TensorDataModule(data, batch_size=8, seed=0)
        with counting_common_steps() as calls:
            if common:
                trainer.fit(vae, datamodule=dm)
            else:
                with mock.patch.object(TrainingStep, "_common_step", _through_the_fast_path):
                    trainer.fit(vae, datamodule=dm)
        if common:
            assert len(calls) >= 12, calls
        return {k: v.clone() for k, v in vae.state_dict().items()}

    with_common, without = fit(True), fit(False)
    assert with_common.keys() == without.keys()
    for name in with_common:
        torch.testing.assert_close(with_common[name], without[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_data_check_schedule_is_one_rule_for_both_steps() -> None:
    """``DataCheck.skip`` and ``DataCheck.__call__`` count batches alike: on the accelerator schedule the first 10
    and then every 25th are due (never 40 batches in a row unchecked); on the CPU every batch is."""
    from lightning_vae.distributions import BernoulliLikelihood
    from lightning_vae.guard import DataCheck

    x = torch.rand(2, 3).round()
    by_call, by_skip = DataCheck(), DataCheck()
    by_call.every_cpu_batch = by_skip.every_cpu_batch = False  # what a batch on an accelerator gets
    due_call = [by_call(BernoulliLikelihood(), x, "raise") for _ in range(120)]
    due_skip = []
    for _ in range(120):
        skipped = by_skip.skip(x)
        due_skip.append(not skipped and by_skip(BernoulliLikelihood(), x, "raise"))
    expected = [i < 10 or i % 25 == 0 for i in range(120)]
    assert due_call == due_skip == expected
    assert by_call.seen == by_skip.seen == 120
    due = [i for i, d in enumerate(expected) if d]
    assert max(b - a for a, b in zip(due, due[1:])) <= 25
    cpu = DataCheck()
    assert all(cpu(BernoulliLikelihood(), x, "raise") for _ in range(120))  # every CPU batch
