"""The non-finite policy (training/faults.py), unit by unit: what NonFiniteGuard says and does under "raise", deferred
reads and "skip", dropped gradients, the parameter check before a checkpoint, the data check's schedule and errors,
the agreement of all ranks, and the sharding refusal. (Whole runs with faults: tests/faults/.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_vae.distributions import BernoulliLikelihood
from lightning_vae.training.faults import (
    DataCheck,
    NonFiniteError,
    NonFiniteGuard,
    all_ranks_finite,
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


def test_skip_skips_warns_and_stops_after_max_skips_in_a_row() -> None:
    guard, net, x = NonFiniteGuard("skip", max_skips=3), _net(), torch.zeros(1, 3)
    with pytest.warns(UserWarning, match=r"Step skipped .*; 1 in a row, 1 in all"):
        assert guard.observe(net, x, _terms(loss=NAN), step=0, batch_idx=0, epoch=0) is True
    with pytest.warns(UserWarning, match=r"2 in a row, 2 in all"):
        assert guard.observe(net, x, _terms(loss=NAN), step=1, batch_idx=1, epoch=0) is True
    assert guard.observe(net, x, _terms(), step=2, batch_idx=2, epoch=0) is False
    assert (guard.skipped_in_row, guard.skipped_total) == (0, 2)  # a finite step ends the run of skips
    for step in (3, 4):
        with pytest.warns(UserWarning):
            guard.observe(net, x, _terms(loss=INF), step=step, batch_idx=step, epoch=0)
    with pytest.raises(NonFiniteError, match=r"3 steps in a row were non-finite and skipped \(max_skips=3\)"):
        guard.observe(net, x, _terms(loss=NAN), step=5, batch_idx=5, epoch=0)


def test_skip_follows_what_all_ranks_agree_on() -> None:
    guard, net = NonFiniteGuard("skip"), _net()
    seen = []
    guard.agree = lambda finite: seen.append(bool(finite)) or torch.tensor(False)  # another rank was not finite
    with pytest.warns(UserWarning, match="Step skipped"):
        assert guard.observe(net, torch.zeros(1, 3), _terms(), step=0, batch_idx=0, epoch=0) is True
    assert seen == [True]


def test_non_finite_gradients_are_dropped_under_skip_only() -> None:
    net = _net()
    net(torch.ones(2, 3)).sum().backward()
    assert NonFiniteGuard("skip").check_gradients(net) is False  # finite: kept
    assert all(p.grad is not None for p in net.parameters())
    net[0].weight.grad[0, 0] = NAN
    assert NonFiniteGuard("raise").check_gradients(net) is False  # not this policy's business
    guard = NonFiniteGuard("skip", max_skips=2)
    with pytest.warns(UserWarning, match=r"Non-finite gradients \(finite loss\): the optimizer step was skipped"):
        assert guard.check_gradients(net) is True
    assert all(p.grad is None for p in net.parameters())
    net(torch.ones(2, 3)).sum().backward()
    net[1].bias.grad[0] = INF
    with pytest.raises(NonFiniteError, match=r"Non-finite gradients: 2 steps in a row were skipped \(max_skips=2\)"):
        guard.check_gradients(net)


def test_a_checkpoint_of_non_finite_parameters_is_refused() -> None:
    net = _net()
    NonFiniteGuard.check_parameters(net)
    with torch.no_grad():
        net[0].weight[0, 0] = NAN
    with pytest.raises(NonFiniteError, match=r"Refusing to write a checkpoint: parameters \['0.weight'\] hold NaN"):
        NonFiniteGuard.check_parameters(net)


@pytest.mark.parametrize(("first", "every"), [(10, 50), (3, 5), (0, 4), (5, 1)])
def test_the_data_check_runs_on_the_first_batches_then_every_nth(first: int, every: int) -> None:
    check = DataCheck(first=first, every=every)
    checked = [i for i in range(120) if check(BernoulliLikelihood(), torch.zeros(2, 3), "raise")]
    assert checked == [i for i in range(120) if i < first or i % every == 0]
    assert check.seen == 120


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
        assert bool(all_ranks_finite(torch.tensor(True))) and not bool(all_ranks_finite(torch.tensor(False)))
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
