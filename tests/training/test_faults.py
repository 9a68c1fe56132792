"""The non-finite policy (training/faults.py), unit by unit: what NonFiniteGuard says and does under "raise", deferred
reads and "skip", the divergence rule and its state, the parameter and optimizer-state checks before a checkpoint,
the data check's schedule and errors, the agreement of all ranks, and the sharding refusal. (Whole runs with
faults: tests/faults/.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_vae.distributions import BernoulliLikelihood
from lightning_vae.training.faults import (
    DataCheck,
    DivergenceError,
    NonFiniteError,
    NonFiniteGuard,
    agree_over_ranks,
    nonfinite_optimizer_states,
    nonfinite_parameters,
    refuse_sharding,
)

NAN, INF = float("nan"), float("inf")


def _terms(loss: float = 1.0, recon: float = 0.5, kl: float = 0.5, elementwise: torch.Tensor | None = None):
    t = torch.tensor
    return SimpleNamespace(loss=t(loss), recon=t(recon), kl=t(kl), kl_elementwise=elementwise)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def test_nonfinite_parameters_are_named_up_to_the_limit() -> None:
    net = _net()
    assert nonfinite_parameters(net) == []
    with torch.no_grad():
        net[0].bias[1] = NAN
        net[1].weight[0, 0] = INF
        net[1].bias.fill_(-INF)
    assert nonfinite_parameters(net) == ["0.bias", "1.weight", "1.bias"]
    assert nonfinite_parameters(net, limit=2) == ["0.bias", "1.weight"]


def test_raise_stops_at_a_non_finite_loss_naming_the_step_and_the_term() -> None:
    guard, net = NonFiniteGuard(), _net()
    x = torch.zeros(2, 3)
    assert guard.observe(net, x, _terms(), step=0, batch_idx=0, epoch=0) is False
    with pytest.raises(NonFiniteError) as info:
        guard.observe(net, x, _terms(loss=NAN, recon=NAN), step=30, batch_idx=6, epoch=2)
    message = str(info.value)
    assert message.startswith("Non-finite loss (nan) at global step 30 (epoch 2, batch 6): ")
    assert "the reconstruction term -log p(x|z) is non-finite" in message and "KL" not in message.split(".")[0]
    assert "resume from the last checkpoint with a lower learning rate" in message


def test_the_diagnosis_names_the_data_the_parameters_and_the_latent_dimensions() -> None:
    guard, net = NonFiniteGuard(), _net()
    x = torch.zeros(2, 3)
    x[1, 2], x[0, 0] = NAN, INF
    elementwise = torch.tensor([[0.1, INF, 0.2, 0.3], [0.1, 0.2, 0.3, NAN]])  # dimensions 1 and 3 of 4
    with torch.no_grad():
        net[1].bias[0] = NAN
    with pytest.raises(NonFiniteError) as info:
        guard.observe(net, x, _terms(loss=INF, kl=INF, elementwise=elementwise), step=3, batch_idx=3, epoch=0)
    message = str(info.value)
    causes = message.split(": ", 1)[1]
    assert causes.index("the data batch holds 2 NaN/inf values") < causes.index("parameters ['1.bias']")
    assert "the KL term is non-finite in latent dimensions [1, 3] (encoder output)" in message
    with pytest.raises(NonFiniteError, match=r"the loss is non-finite while its terms are finite \(β, free bits"):
        guard.observe(_net(), torch.zeros(2, 3), _terms(loss=NAN), step=4, batch_idx=4, epoch=0)


def test_deferred_reads_keep_detached_values_until_a_flush_names_the_first_bad_step() -> None:
    guard, net = NonFiniteGuard(deferred=True), _net()
    loss = torch.tensor(1.0, requires_grad=True) * 2
    terms = SimpleNamespace(loss=loss, recon=loss * 0.5, kl=loss * 0.5, kl_elementwise=None)
    assert guard.observe(net, torch.zeros(1, 3), terms, step=0, batch_idx=0, epoch=0) is False
    assert len(guard.pending) == 1 and not guard.pending[0].loss.requires_grad  # no graph kept alive
    guard.flush(net)
    assert guard.pending == []  # all finite: forgotten
    for step, value in enumerate([1.0, NAN, 2.0, INF], start=10):
        assert guard.observe(net, torch.zeros(1, 3), _terms(loss=value), step=step, batch_idx=step, epoch=1) is False
    first_bad = r"(?s)global step 11 \(epoch 1, batch 11\).*the steps after 11 ran on non-finite values"
    with pytest.raises(NonFiniteError, match=first_bad):
        guard.flush(net)
    assert guard.pending == []
    guard.flush(net)  # nothing left: no error


def test_a_finite_loss_far_above_the_first_steps_stops_the_run() -> None:
    guard, net, x = NonFiniteGuard(divergence_ratio=100.0), _net(), torch.zeros(1, 3)
    guard.observe(net, x, _terms(loss=-20.0), step=0, batch_idx=0, epoch=0)  # the scale: |first loss| = 20
    assert guard.state_dict() == {"scale": 20.0, "calibrated": 1}
    guard.observe(net, x, _terms(loss=1999.0), step=1, batch_idx=1, epoch=0)  # below 100 x 20
    with pytest.raises(DivergenceError, match=r"reached -2000 at global step 2 \(epoch 0, batch 2\), more than 100 "):
        guard.observe(net, x, _terms(loss=-2000.0), step=2, batch_idx=2, epoch=0)
    small = NonFiniteGuard(divergence_ratio=10.0)
    small.observe(net, x, _terms(loss=0.01), step=0, batch_idx=0, epoch=0)  # a scale below 1 nat counts as 1
    small.observe(net, x, _terms(loss=9.9), step=1, batch_idx=1, epoch=0)
    with pytest.raises(DivergenceError, match=r"scale 1 \(the absolute loss of its first step\)"):
        small.observe(net, x, _terms(loss=10.0), step=2, batch_idx=2, epoch=0)
    off = NonFiniteGuard(divergence_ratio=None)
    for step, value in enumerate([1.0, 1e30]):
        off.observe(net, x, _terms(loss=value), step=step, batch_idx=step, epoch=0)


def test_the_divergence_scale_survives_a_checkpoint() -> None:
    net, x = _net(), torch.zeros(1, 3)
    resumed = NonFiniteGuard(divergence_ratio=100.0)
    resumed.load_state_dict({"scale": 20.0, "calibrated": 1})
    with pytest.raises(DivergenceError):  # the same limit as the run it continues: no new calibration
        resumed.observe(net, x, _terms(loss=2500.0), step=50, batch_idx=0, epoch=3)
    fresh = NonFiniteGuard(divergence_ratio=100.0)
    fresh.load_state_dict({})  # an older checkpoint without the record: calibrate again
    fresh.observe(net, x, _terms(loss=2500.0), step=50, batch_idx=0, epoch=3)
    assert fresh.state_dict() == {"scale": 2500.0, "calibrated": 1}
    deferred = NonFiniteGuard(deferred=True, divergence_ratio=100.0)
    deferred.load_state_dict({"scale": 1.0, "calibrated": 1})
    deferred.observe(net, x, _terms(loss=150.0), step=7, batch_idx=7, epoch=0)
    with pytest.raises(DivergenceError, match="global step 7"):  # read at the flush, as the non-finite values are
        deferred.flush(net)


def test_skip_drops_the_gradients_of_a_non_finite_step_and_stops_after_max_skips() -> None:
    guard, net, x = NonFiniteGuard("skip", max_skips=3), _net(), torch.zeros(1, 3)

    def step(loss: float, n: int) -> bool:
        assert guard.observe(net, x, _terms(loss=loss), step=n, batch_idx=n, epoch=0) is False  # decided later
        net(torch.ones(2, 3)).sum().backward()
        return guard.check_step(net)

    with pytest.warns(UserWarning, match=r"(?s)Non-finite loss \(nan\) at global step 0 .*Step skipped .*1 in a row"):
        assert step(NAN, 0) is True
    assert all(p.grad is None for p in net.parameters())  # the optimizer step changes nothing
    with pytest.warns(UserWarning, match=r"2 in a row, 2 in all"):
        assert step(INF, 1) is True
    assert step(1.0, 2) is False and all(p.grad is not None for p in net.parameters())
    assert (guard.skipped_in_row, guard.skipped_total) == (0, 2)  # a finite step ends the run of skips
    net.zero_grad()
    for n in (3, 4):
        with pytest.warns(UserWarning):
            step(NAN, n)
    with pytest.raises(NonFiniteError, match=r"3 steps in a row were non-finite and skipped \(max_skips=3\)"):
        step(NAN, 5)


def test_skip_drops_non_finite_gradients_of_a_finite_loss_only_under_skip() -> None:
    net = _net()
    net(torch.ones(2, 3)).sum().backward()
    assert NonFiniteGuard("skip").check_step(net) is False  # finite: kept
    assert all(p.grad is not None for p in net.parameters())
    net[0].weight.grad[0, 0] = NAN
    assert NonFiniteGuard("raise").check_step(net) is False  # not this policy's business
    assert NonFiniteGuard("skip").check_step(net, scaled=True) is False  # the gradient scaler's business
    guard = NonFiniteGuard("skip", max_skips=2)
    with pytest.warns(UserWarning, match=r"Non-finite gradients, or a non-finite loss on another process"):
        assert guard.check_gradients(net) is True
    assert all(p.grad is None for p in net.parameters())


def test_skip_follows_what_all_ranks_agree_on() -> None:
    guard, net = NonFiniteGuard("skip"), _net()
    seen = []

    def another_rank_was_not_finite(flags: torch.Tensor) -> torch.Tensor:
        seen.append(flags.tolist())
        return torch.tensor([1.0, float(flags[1])])

    guard.agree = another_rank_was_not_finite
    guard.observe(net, torch.zeros(1, 3), _terms(loss=2.5), step=0, batch_idx=0, epoch=0)
    net(torch.ones(2, 3)).sum().backward()
    with pytest.warns(UserWarning, match="Step skipped"):
        assert guard.check_step(net) is True
    assert seen == [[0.0, 2.5]]  # [any non-finite here, largest |loss| here]


def test_a_checkpoint_of_non_finite_parameters_or_optimizer_state_is_refused() -> None:
    net = _net()
    NonFiniteGuard.check_parameters(net)
    with torch.no_grad():
        net[0].weight[0, 0] = NAN
    with pytest.raises(NonFiniteError, match=r"Refusing to write a checkpoint: parameters \['0.weight'\] hold NaN"):
        NonFiniteGuard.check_parameters(net)
    optimizer = torch.optim.Adam(_net().parameters())
    clean = {"optimizer_states": [optimizer.state_dict()], "callbacks": {}}
    NonFiniteGuard.check_optimizer_states(clean)
    state = optimizer.state_dict()
    state["state"] = {0: {"exp_avg": torch.zeros(2), "exp_avg_sq": torch.tensor([1.0, INF]), "step": torch.tensor(3)}}
    kept = {"state": {2: {"exp_avg": torch.tensor([NAN])}}, "param_groups": []}  # a callback's own optimizer
    assert nonfinite_optimizer_states([state]) == ["optimizer_states[0].state[0].exp_avg_sq"]
    assert nonfinite_optimizer_states({"Aggressive": {"inner": kept}}, "callbacks") == [
        "callbacks.Aggressive.inner.state[2].exp_avg"
    ]
    with pytest.raises(NonFiniteError, match=r"optimizer state \['optimizer_states\[0\]\.state\[0\]\.exp_avg_sq'"):
        NonFiniteGuard.check_optimizer_states({"optimizer_states": [state]})
    with pytest.raises(NonFiniteError, match=r"\['callbacks\.Aggressive\.inner\.state\[2\]\.exp_avg'\]"):
        NonFiniteGuard.check_optimizer_states({"callbacks": {"Aggressive": {"inner": kept}}})


def test_the_data_check_schedule_is_one_rule_for_both_steps() -> None:
    """``DataCheck.skip`` and ``DataCheck.__call__`` count batches alike: on the accelerator schedule the first 10
    and then every 25th are due (never 40 batches in a row unchecked); on the CPU every batch is."""
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


@pytest.mark.parametrize(("first", "every"), [(10, 50), (3, 5), (0, 4), (5, 1)])
def test_the_accelerator_schedule_checks_the_first_batches_then_every_nth(first: int, every: int) -> None:
    check = DataCheck(first=first, every=every)
    check.every_cpu_batch = False
    checked = [i for i in range(120) if check(BernoulliLikelihood(), torch.zeros(2, 3), "raise")]
    assert checked == [i for i in range(120) if i < first or i % every == 0]
    assert check.seen == 120


def test_the_quick_cpu_test_passes_batches_inside_the_range_of_the_last_full_check() -> None:
    check, likelihood = DataCheck(), BernoulliLikelihood()
    inside, outside = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.5]])
    assert check.skip(inside) is False  # no full check yet
    assert check(likelihood, inside, "raise") is True
    assert check.skip(inside) is True  # one min/max against [0, 1]: no full check needed
    assert check.skip(outside) is False and check.skip(torch.tensor([[NAN]])) is False
    with pytest.raises(ValueError, match=r"got values in \[0, 1.5\]"):
        check(likelihood, outside, "raise")


def test_the_data_check_names_bad_data_and_where_it_came() -> None:
    likelihood, check = BernoulliLikelihood(), DataCheck(first=100)
    with pytest.raises(ValueError, match=r"got values in \[0, 2\]; rescale the data .* \(step 7, batch 3\)$"):
        check(likelihood, torch.tensor([[0.0, 2.0]]), "raise", where=lambda: "step 7, batch 3")
    nan = torch.tensor([[0.0, NAN]])
    with pytest.raises(NonFiniteError, match=r"1 NaN or infinite values"):
        check(likelihood, nan, "raise")
    assert check(likelihood, nan, "skip") is True  # under skip the step's loss is the guard's to handle
    calls = []
    assert check(likelihood, torch.zeros(1, 2), "raise", where=lambda: calls.append(1) or "") is True
    assert calls == []  # the description is built on failure only


def test_all_ranks_agree_through_one_all_reduce(tmp_path: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        flags = torch.tensor([0.0, 3.5])
        agreed = agree_over_ranks(flags)
        assert agreed.tolist() == [0.0, 3.5] and agreed is not flags  # one process: its own values, a new tensor
    finally:
        dist.destroy_process_group()


def test_sharded_strategies_over_several_processes_are_refused() -> None:
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    refuse_sharding(SimpleNamespace(world_size=1, strategy=FSDPStrategy()))  # one process: nothing sharded
    refuse_sharding(SimpleNamespace(world_size=4, strategy=DDPStrategy()))
    with pytest.raises(ValueError, match=r"sharded training \(FSDPStrategy with 2 processes\).*strategy='ddp'"):
        refuse_sharding(SimpleNamespace(world_size=2, strategy=FSDPStrategy()))
    deepspeed = type("DeepSpeedStrategy", (), {"zero_stage_3": True})()
    with pytest.raises(ValueError, match=r"\(DeepSpeedStrategy with 8 processes\)"):
        refuse_sharding(SimpleNamespace(world_size=8, strategy=deepspeed))


class _Trainer:
    """A trainer whose step and epoch count how often they are read."""

    def __init__(self, step: int, epoch: int) -> None:
        self.reads = 0
        self._step, self._epoch = step, epoch

    @property
    def global_step(self) -> int:
        self.reads += 1
        return self._step

    @property
    def current_epoch(self) -> int:
        self.reads += 1
        return self._epoch


def test_observe_step_reads_the_trainer_only_when_the_loss_needs_more_than_one_read() -> None:
    from lightning_vae.training.faults import CALIBRATION_STEPS

    guard, net, x = NonFiniteGuard(divergence_ratio=100.0), _net(), torch.zeros(1, 3)
    trainer = _Trainer(step=7, epoch=1)
    for i in range(CALIBRATION_STEPS):  # calibrating: each step is recorded, so its step and epoch are read
        assert guard.observe_step(net, x, _terms(loss=2.0), trainer, i) is False
    reads = trainer.reads
    assert reads == 2 * CALIBRATION_STEPS
    for i in range(5):  # calibrated, well below the limit: one host read of the loss and nothing else
        assert guard.observe_step(net, x, _terms(loss=3.0), trainer, i) is False
    assert trainer.reads == reads
    with pytest.raises(NonFiniteError, match=r"global step 7 \(epoch 1, batch 9\)"):  # a bad step is named
        guard.observe_step(net, x, _terms(loss=NAN), trainer, 9)
    with pytest.raises(DivergenceError, match=r"global step 7 \(epoch 1, batch 10\)"):
        guard.observe_step(net, x, _terms(loss=1e6), trainer, 10)
    skip = NonFiniteGuard(policy="skip")  # every step kept until its gradients are checked: named when kept
    assert skip.observe_step(net, x, _terms(loss=NAN), None, 3) is False
    assert skip.unchecked[0][0].step == 0 and skip.unchecked[0][0].batch_idx == 3
