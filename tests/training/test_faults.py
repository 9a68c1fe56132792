"""training/faults.py: the data checks, the non-finite policy's schedule."""

from __future__ import annotations

import torch


def test_the_data_check_schedule_is_one_rule_for_both_steps() -> None:
    """``DataCheck.skip`` and ``DataCheck.__call__`` count batches alike: on the accelerator schedule the first 10
    and then every 25th are due (never 40 batches in a row unchecked); on the CPU every batch is."""
    from lightning_vae.distributions import BernoulliLikelihood
    from lightning_vae.training.faults import DataCheck

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
