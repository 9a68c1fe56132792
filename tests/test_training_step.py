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


def _quiet(vae: VAE) -> VAE:
    """``vae`` after its first step (the fast path decided), in the middle of an epoch, no data check due."""
    vae._trainer = QuietTrainer()  # type: ignore[assignment]
    vae.data_check.seen = 11
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
    return _quiet(vae)


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
    "data check due": lambda vae: setattr(vae.data_check, "seen", 50),
    "first data checks": lambda vae: setattr(vae.data_check, "seen", 3),
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


def test_the_common_step_is_not_taken_under_autocast() -> None:
    vae = _vae()
    with counting_common_steps() as calls, torch.autocast("cpu", dtype=torch.bfloat16):
        out = vae.training_step(torch.rand(4, 1, 8, 8).round(), 7)
    assert calls == [] and out is not None and out["loss"].dtype == torch.float32


def test_the_common_step_counts_batches_for_the_data_check() -> None:
    """Steps it takes count towards the data check's schedule: the 50th batch is checked and bad data caught."""
    vae = _vae()
    x = torch.rand(4, 1, 8, 8).round()
    with counting_common_steps() as calls:
        for i in range(11, 50):
            vae.training_step(x, i)
    assert len(calls) == 50 - 11  # batches 11 to 49: none due
    with pytest.raises(ValueError, match=r"expects targets in \[0, 1\].*global step 123, epoch 4, batch 50"):
        vae.training_step(torch.full((4, 1, 8, 8), 3.0), 50)


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
    x[2, 0, 3, 3] = float("nan")  # not a data-checked batch: the loss shows it
    with counting_common_steps() as calls, pytest.raises(NonFiniteError) as err:
        vae.training_step(x, 17)
    assert calls == [17]
    message = str(err.value)
    assert "global step 123 (epoch 4, batch 17)" in message
    assert "the data batch holds 1 NaN/inf values" in message
    assert "reconstruction term" in message and "resume from the last checkpoint" in message


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
    """``DataCheck.skip`` and ``DataCheck.__call__`` count batches alike: the first 10 and then every 50th are due."""
    from lightning_vae.distributions import BernoulliLikelihood
    from lightning_vae.guard import DataCheck

    x = torch.rand(2, 3).round()
    by_call, by_skip = DataCheck(), DataCheck()
    due_call = [by_call(BernoulliLikelihood(), x, "raise") for _ in range(120)]
    due_skip = []
    for _ in range(120):
        skipped = by_skip.skip()
        due_skip.append(not skipped and by_skip(BernoulliLikelihood(), x, "raise"))
    expected = [i < 10 or i % 50 == 0 for i in range(120)]
    assert due_call == due_skip == expected
    assert by_call.seen == by_skip.seen == 120
