"""Host reads (device-to-host synchronisations) per training step, counted on the CPU.

On an accelerator every read of a device value by the host (``.item()``, ``bool(t)``, ``.tolist()``,
``.cpu()``, ``float(t)``, ``int(t)``) makes the CPU wait until the device has finished all the work
queued before it, so the CPU can no longer run ahead and queue the next step. On a CPU these reads
cost nothing and nothing shows, so the tests below count them: :class:`HostReads` patches those
methods of ``torch.Tensor`` and records each call made while a watched method (``training_step``, a
callback's batch hooks, ...) runs. A training step that neither logs (``Trainer(log_every_n_steps)``,
first and last batch of the epoch) nor checks its data (on an accelerator the first 10 batches, then every
25th; every batch on the CPU, where a read costs nothing) must make none.

The non-finite guard reads the loss at every step on a CPU on purpose (it costs nothing there) and
keeps device values to read on logging steps elsewhere; the tests put it in that deferred mode, as
``VAE.on_fit_start`` does on an accelerator. Likewise the training step's ``clamp_log_var`` reads a
CPU batch's log-variance range to skip the clamp where it is the identity, and on any other device
clamps without reading (tested on ``meta`` tensors in ``tests/functional/test_math.py``); the tests
give it its accelerator behaviour.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from support.host_reads import READ_METHODS, HostReads, Read
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae.callbacks import FreeBits, KLAnnealing, PosteriorCollapseMonitor, TargetRate
from lightning_vae.data import TensorDataModule
from lightning_vae.distributions.posteriors import LOG_VAR_RANGE
from lightning_vae.functional.math import soft_clamp
from lightning_vae.utilities import logs_this_step


def test_the_counter_sees_every_kind_of_read() -> None:
    counter = HostReads()
    t = torch.tensor([1.5])

    class Probe:
        def run(self) -> None:
            t.item(), t.tolist(), t.cpu(), t.numpy(), bool(t), float(t), int(t), [0, 1][torch.tensor(1)]

    probe = Probe()
    with counter.patched():
        counter.watch(probe, ("run",))
        probe.run()
        t.item()  # outside a watched method: not counted
    assert [r.method for r in counter.reads] == list(READ_METHODS)
    assert "item" not in torch.Tensor.__dict__  # restored


class StepLabel(Callback):
    """First in the callback list: labels the reads of each training step; puts the guard in deferred mode."""

    def __init__(self, counter: HostReads, deferred: bool = True) -> None:
        self.counter, self.deferred = counter, deferred

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.guard.deferred = self.deferred  # True: what VAE.on_fit_start sets on an accelerator
        pl_module.data_check.every_cpu_batch = not self.deferred  # and the data check's accelerator schedule

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.counter.label = (batch_idx, logs_this_step(trainer))


N_BATCHES, LOG_EVERY = 30, 20
#: The data check's schedule on an accelerator (every batch on the CPU): the first 10 batches, then every 25th.
DATA_CHECK_EVERY = 25


@dataclass
class Run:
    reads: list[Read]
    #: ``(key, value)`` of every ``log(..., prog_bar=True)`` call made during training.
    prog_bar_values: list[tuple[str, Any]]
    host: weakref.WeakSet
    #: ``(step label, key, value)`` of every ``log`` call made during training.
    logged: list[tuple[Any, str, Any]]


def _run(
    tmp_path: Path,
    callbacks: list[Callback],
    likelihood: str = "bernoulli",
    prior: str = "standard_normal",
    deferred: bool = True,
) -> Run:
    counter = HostReads()
    vae = tiny_vae(likelihood=likelihood, prior=prior, prior_components=3)
    data = torch.rand(N_BATCHES * 4, 1, 8, 8).round()
    dm = TensorDataModule(data, val=data[:8], batch_size=4)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=None, limit_val_batches=0),
        log_every_n_steps=LOG_EVERY,
        num_sanity_val_steps=0,
        callbacks=[StepLabel(counter, deferred), *callbacks],
    )
    prog_bar_values: list[tuple[str, Any]] = []
    logged_values: list[tuple[Any, str, Any]] = []
    log = vae.log

    def logged(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("prog_bar"):
            prog_bar_values.append((name, value))
        logged_values.append((counter.label, name, value))
        log(name, value, *args, **kwargs)

    vae.log = logged  # type: ignore[method-assign]  # log_dict and the callbacks call it too
    accelerator_clamp = lambda log_var: soft_clamp(log_var, *LOG_VAR_RANGE)  # noqa: E731
    with counter.patched(), mock.patch("lightning_vae.objective.elbo.clamp_log_var", accelerator_clamp):
        counter.watch(vae)
        for cb in callbacks:
            counter.watch(cb)
        trainer.fit(vae, datamodule=dm)
    return Run(counter.reads, prog_bar_values, counter.host, logged_values)


def _on_host(value: Any, host: weakref.WeakSet) -> bool:
    """A tensor known to be on the host: a host copy, a tensor made from Python numbers, or a view of one."""
    if not isinstance(value, torch.Tensor):
        return False
    known = {id(t) for t in host}  # by identity: a WeakSet compares tensors by value
    return id(value) in known or (value._base is not None and id(value._base) in known)


def _quiet_steps(reads: list[Read]) -> dict[int, list[Read]]:
    """Steps that neither log nor check data: from batch 11 (data checked on batches 0..9 and every 25th), not the
    last."""
    quiet: dict[int, list[Read]] = {
        i: [] for i in range(11, N_BATCHES - 1) if (i + 1) % LOG_EVERY and i % DATA_CHECK_EVERY
    }
    for read in reads:
        batch_idx, logging = read.step
        if batch_idx in quiet:
            assert not logging, read
            quiet[batch_idx].append(read)
    return quiet


def _describe(quiet: dict[int, list[Read]]) -> str:
    lines = sorted({f"{r.method} at {r.where}" for reads in quiet.values() for r in reads})
    return "host reads on steps that neither log nor check data:\n" + "\n".join(lines)


def test_a_read_in_the_step_is_seen(tmp_path: Path) -> None:
    """The guard outside deferred mode (a CPU run) reads the loss at every step: the counter sees it there (in
    the guard, which the one training-step path calls)."""
    quiet = _quiet_steps(_run(tmp_path, [], deferred=False).reads)
    places = ("faults.py",)
    assert all(any(r.method == "item" and any(p in r.where for p in places) for r in reads) for reads in quiet.values())


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("prior", ["standard_normal", "learnable", "mixture", "vamp"])
def test_no_host_read_on_quiet_training_steps(tmp_path: Path, prior: str, likelihood: str) -> None:
    quiet = _quiet_steps(_run(tmp_path, [], likelihood=likelihood, prior=prior).reads)
    assert len(quiet) >= 15
    assert not any(quiet.values()), _describe(quiet)


CALLBACKS = {
    "KLAnnealing": lambda: KLAnnealing(schedule="linear", start=0.0, end=1.0, length=30, prog_bar=True),
    "FreeBits": lambda: FreeBits(0.2, mode="total", prog_bar=True),
    "TargetRate": lambda: TargetRate(target=1.0, update_every=7),
    "PosteriorCollapseMonitor": lambda: PosteriorCollapseMonitor(log_images=False),
}


@pytest.mark.parametrize("name", sorted(CALLBACKS))
def test_no_host_read_on_quiet_steps_with_callbacks(tmp_path: Path, name: str) -> None:
    run = _run(tmp_path, [CALLBACKS[name]()], prior="mixture")
    quiet = _quiet_steps(run.reads)
    if name == "TargetRate":
        # β moves after every 7th optimizer step: the KL of that step is read then, and only then.
        updates = [i for i in quiet if (i + 1) % 7 == 0]
        assert all(any(r.method == "__float__" and "target_rate.py" in r.where for r in quiet[i]) for i in updates)
        quiet = {i: reads for i, reads in quiet.items() if i not in updates}
    assert not any(quiet.values()), _describe(quiet)
    # The progress bar converts its values at every refresh (every batch by default): each one must already be
    # on the host (a copy made on a logging step, or a number turned into a host tensor), never a device tensor.
    shown = {"KLAnnealing": {"train/beta"}, "FreeBits": {"train/free_bits"}, "TargetRate": {"train/beta"}}
    assert {key for key, _ in run.prog_bar_values} == {"train/loss"} | shown.get(name, set())
    for key, value in run.prog_bar_values:
        assert _on_host(value, run.host), (key, value)


@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
def test_a_logging_step_reads_the_device_once(tmp_path: Path, prior: str) -> None:
    """A step that logs copies its values and the guard's kept losses to the host in one copy, and logs host tensors
    only (the loggers' conversions and the progress bar then wait for nothing); before, the loss's copy, the
    guard's flush and one read per logged device value (three or more) each waited for the device."""
    run = _run(tmp_path, [], prior=prior)
    logging = [i for i in range(11, N_BATCHES) if (i + 1) % LOG_EVERY == 0 or i == N_BATCHES - 1]
    assert logging == [19, 29]  # no data check on these batches (the first 10, then every 50th)
    for i in logging:
        reads = [r for r in run.reads if r.step[0] == i]  # batch 29 logs as the epoch's last batch
        assert [r.method for r in reads] == ["cpu"], sorted(f"{r.method} at {r.where}" for r in reads)
    values = [(label, key, value) for label, key, value in run.logged if label is not None and label[0] in logging]
    assert {key for _, key, _ in values} >= {"train/loss", "train/elbo", "train/recon", "train/kl", "train/beta"}
    assert all(_on_host(value, run.host) for _, _, value in values), [(k, v) for _, k, v in values]


def test_no_host_read_in_quiet_validation_steps(tmp_path: Path) -> None:
    """Validation and test steps with the collapse monitor and the importance-weighted NLL: no read, no copy."""
    counter = HostReads()
    vae = tiny_vae(n_eval_samples=4)
    vae.data_check.every_cpu_batch = False  # the accelerator schedule (a CPU run checks every batch, reads free)
    monitor = PosteriorCollapseMonitor(log_images=False, iw_samples=4)

    class Label(Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
            counter.label = batch_idx

        on_test_batch_start = on_validation_batch_start

    data = torch.rand(64, 1, 8, 8).round()
    dm = TensorDataModule(data, val=data, batch_size=4)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, limit_val_batches=None, limit_test_batches=None), callbacks=[Label(), monitor]
    )
    hooks = (
        "validation_step",
        "test_step",
        "on_validation_batch_start",
        "on_validation_batch_end",
        "on_test_batch_start",
        "on_test_batch_end",
    )
    with counter.patched():
        counter.watch(vae, hooks)
        counter.watch(monitor, hooks)
        trainer.validate(vae, datamodule=dm, verbose=False)
        trainer.test(vae, datamodule=dm, verbose=False)
    # 16 validation batches then 16 test batches: the data checks run on the first 10 batches the module sees.
    labelled = [r for r in counter.reads if r.step is not None]
    quiet = [r for r in labelled if r.step >= 10]
    assert not quiet, sorted({f"{r.method} at {r.where}" for r in quiet})
    assert any(r.step < 10 for r in labelled)  # the data checks themselves are seen
