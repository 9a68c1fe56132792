"""One NaN never silently ruins a run: it stops with a message naming the step and the term, or is skipped."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from support.modules import tiny_vae, trainer_kwargs
from torch import nn

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder
from lightning_vae.training.faults import NonFiniteError

SHAPE = (1, 8, 8)


class FaultAt(nn.Module):
    """Wraps a network; its output becomes NaN on the calls listed in ``at`` (training calls only)."""

    def __init__(self, net: nn.Module, at: set[int]) -> None:
        super().__init__()
        self.net, self.at, self.calls = net, at, 0

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls - 1 in self.at:
                out = tuple(o * float("nan") for o in out) if isinstance(out, tuple) else out * float("nan")
        return out


def _data(n: int = 64, nan_batch: int | None = None, batch_size: int = 4) -> TensorDataModule:
    x = torch.rand(n, *SHAPE)
    if nan_batch is not None:
        x[nan_batch * batch_size + 1, 0, 2, 3] = float("nan")
    return TensorDataModule(x, val=x[:batch_size].nan_to_num(), batch_size=batch_size, shuffle=False)


def _vae(encoder_nan: set[int] = frozenset(), decoder_nan: set[int] = frozenset(), **kwargs) -> VAE:
    enc = MLPEncoder(SHAPE, latent_dim=4, hidden_sizes=(16,))
    dec = MLPDecoder(4, SHAPE, hidden_sizes=(16,))
    return VAE(FaultAt(enc, set(encoder_nan)), FaultAt(dec, set(decoder_nan)), latent_dim=4, data_shape=SHAPE, **kwargs)


def _fit(vae: VAE, tmp_path: Path, dm: TensorDataModule | None = None, **kwargs) -> Trainer:
    settings = dict(limit_train_batches=None, limit_val_batches=0, max_epochs=3)
    settings.update(kwargs)
    trainer = Trainer(**trainer_kwargs(tmp_path, **settings))
    trainer.fit(vae, datamodule=dm or _data())
    return trainer


def _finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def test_nan_decoder_output_at_step_30_stops_and_names_it(tmp_path: Path) -> None:
    vae = _vae(decoder_nan={30})
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=10, save_top_k=-1, save_last=True)
    with pytest.raises(NonFiniteError, match=r"global step 30 \(epoch 1, batch 14\).*reconstruction"):
        _fit(vae, tmp_path, callbacks=[ckpt], enable_checkpointing=True)
    saved = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert saved, "checkpoints before the fault are kept"
    for path in saved:
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(bool(torch.isfinite(v).all()) for v in state.values())


def test_nan_encoder_output_names_the_kl_and_dimensions(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteError, match=r"global step 7 .*KL term is non-finite in latent dimensions \[0, 1, 2"):
        _fit(_vae(encoder_nan={7}), tmp_path)


def test_nan_data_in_batch_12_names_the_data(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteError, match=r"global step 12 \(epoch 0, batch 12\): the data batch holds 1 NaN/inf"):
        _fit(tiny_vae(likelihood="gaussian"), tmp_path, dm=_data(nan_batch=12))


def test_divergence_with_a_huge_learning_rate_stops_before_a_nan_checkpoint(tmp_path: Path) -> None:
    from functools import partial

    vae = tiny_vae(likelihood="gaussian", optimizer=partial(torch.optim.SGD, lr=1e4))
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(NonFiniteError, match="Non-finite loss|Divergence"):  # DivergenceError while still finite
        _fit(vae, tmp_path, dm=_data(n=64), callbacks=[ckpt], enable_checkpointing=True, max_epochs=50)
    for path in (tmp_path / "ckpt").glob("*.ckpt"):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(bool(torch.isfinite(v).all()) for v in state.values()), f"{path.name} holds non-finite weights"


def test_checkpoint_of_non_finite_weights_is_refused(tmp_path: Path) -> None:
    vae = tiny_vae()
    trainer = _fit(vae, tmp_path, max_epochs=1)
    with torch.no_grad():
        next(vae.parameters())[0] = float("inf")
    with pytest.raises(NonFiniteError, match="Refusing to write a checkpoint"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


class Snapshots(Callback):
    """Parameters and optimizer state before and after each training batch."""

    def __init__(self) -> None:
        self.before: dict[int, tuple] = {}
        self.after: dict[int, tuple] = {}

    def _state(self, trainer: Trainer, pl_module: VAE) -> tuple:
        params = [p.detach().clone() for p in pl_module.parameters()]
        return params, copy.deepcopy(trainer.optimizers[0].state_dict())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before[trainer.global_step] = self._state(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[len(self.after)] = self._state(trainer, pl_module)


def _same_state(a: tuple, b: tuple) -> bool:
    params_a, opt_a = a
    params_b, opt_b = b
    same_params = all(torch.equal(x, y) for x, y in zip(params_a, params_b))
    states_a, states_b = opt_a["state"], opt_b["state"]
    same_opt = states_a.keys() == states_b.keys() and all(
        torch.equal(states_a[k][n], states_b[k][n]) for k in states_a for n in states_a[k]
    )
    return same_params and same_opt


def test_skip_leaves_parameters_and_optimizer_state_unchanged(tmp_path: Path) -> None:
    snaps = Snapshots()
    vae = _vae(decoder_nan={5}, on_nonfinite="skip")
    with pytest.warns(UserWarning, match=r"(?s)global step 5 .*Step skipped"):
        trainer = _fit(vae, tmp_path, callbacks=[snaps], max_epochs=1)
    # the 6th batch (index 5) changed nothing; the batches around it trained
    assert _same_state(snaps.before[5], snaps.after[5])
    assert not _same_state(snaps.before[4], snaps.after[4])
    # Lightning still counts the skipped step (its optimizer call finds no gradients and changes nothing)
    assert trainer.global_step == 16 and _finite(vae)


def test_skip_drops_non_finite_gradients_of_a_finite_loss(tmp_path: Path) -> None:
    class NanGradient(nn.Module):
        def __init__(self, net: nn.Module, at: int) -> None:
            super().__init__()
            self.net, self.at, self.calls = net, at, 0

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            out = self.net(z)
            if self.training:
                self.calls += 1
                if self.calls - 1 == self.at:
                    out.register_hook(lambda g: g * float("nan"))
            return out

    snaps = Snapshots()
    enc, dec = MLPEncoder(SHAPE, 4, hidden_sizes=(16,)), MLPDecoder(4, SHAPE, hidden_sizes=(16,))
    vae = VAE(enc, NanGradient(dec, at=3), latent_dim=4, data_shape=SHAPE, on_nonfinite="skip")
    with pytest.warns(UserWarning, match="Non-finite gradients"):
        _fit(vae, tmp_path, callbacks=[snaps], max_epochs=1)
    assert _same_state(snaps.before[3], snaps.after[3]) and _finite(vae)


def test_skip_stops_after_max_skips_in_a_row(tmp_path: Path) -> None:
    vae = _vae(decoder_nan=set(range(3, 100)), on_nonfinite="skip", max_nonfinite_skips=4)
    with pytest.raises(NonFiniteError, match="4 steps in a row"), pytest.warns(UserWarning):
        _fit(vae, tmp_path)


def test_deferred_check_names_the_first_bad_step(tmp_path: Path) -> None:
    """On an accelerator the loss is read on logging steps: the error still names the first non-finite step."""

    class Deferred(Callback):
        def on_train_start(self, trainer, pl_module):
            pl_module.guard.deferred = True

    with pytest.raises(NonFiniteError, match=r"(?s)global step 6 .*Detected at a later check"):
        _fit(_vae(decoder_nan={6}), tmp_path, callbacks=[Deferred()], log_every_n_steps=10)


def test_nan_validation_batch_is_an_error_not_dropped(tmp_path: Path) -> None:
    x = torch.rand(32, *SHAPE)
    val = torch.rand(16, *SHAPE)
    val[9, 0, 0, 0] = float("nan")  # batch 2 of 4
    dm = TensorDataModule(x, val=val, batch_size=4)
    with pytest.raises(NonFiniteError, match=r"1 NaN.*\(val batch 2\)|val: 1 of 4 batches .*\[2\]"):
        _fit(tiny_vae(likelihood="gaussian"), tmp_path, dm=dm, limit_val_batches=None, num_sanity_val_steps=0)
    vae = tiny_vae(likelihood="gaussian", on_nonfinite="skip")
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None))
    with pytest.warns(UserWarning, match="val: 1 of 4 batches"):
        trainer.validate(vae, datamodule=dm)
    assert torch.isnan(trainer.callback_metrics["val/loss"])  # NaN, never an optimistic mean of the rest


# ---------------------------------------------------------------------------------------- divergence while finite
def test_a_loss_that_explodes_while_finite_stops_the_run(tmp_path: Path) -> None:
    """Adam with lr=10: the loss grows by orders of magnitude in one step without becoming NaN."""
    from functools import partial

    from lightning_vae.training.faults import DivergenceError

    vae = tiny_vae(optimizer=partial(torch.optim.Adam, lr=10.0))
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(DivergenceError, match=r"Divergence: the training loss reached .* at global step \d+ .*more "
                                              r"than 10000 times the run's scale"):  # fmt: skip
        _fit(vae, tmp_path, dm=_data(n=64), callbacks=[ckpt], enable_checkpointing=True, max_epochs=20)
    assert vae.guard.scale > 0
    # the same run with the check turned off trains to its end on exploded values (what the check prevents)
    vae = tiny_vae(optimizer=partial(torch.optim.Adam, lr=10.0), divergence_ratio=None)
    trainer = _fit(vae, tmp_path, dm=_data(n=64), max_epochs=2)
    assert trainer.global_step == 32


def test_the_divergence_scale_survives_a_resume(tmp_path: Path) -> None:
    vae = tiny_vae()
    trainer = _fit(vae, tmp_path, max_epochs=1)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    resumed = tiny_vae()
    Trainer(**trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=None, limit_val_batches=0)).fit(
        resumed, datamodule=_data(), ckpt_path=tmp_path / "a.ckpt"
    )
    assert resumed.guard.scale == vae.guard.scale and resumed.guard.limit == vae.guard.limit


class InfiniteAdamState(Callback):
    """What Adam's second moment becomes when a squared gradient overflows float32: inf, the parameters finite."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            state = next(iter(trainer.optimizers[0].state.values()))
            state["exp_avg_sq"].view(-1)[0] = float("inf")


def test_non_finite_optimizer_state_is_never_written(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    with pytest.raises(NonFiniteError, match=r"Refusing to write a checkpoint: optimizer state "
                                             r"\['optimizer_states\[0\]\.state\[\d+\]\.exp_avg_sq'\]"):  # fmt: skip
        _fit(tiny_vae(), tmp_path, callbacks=[InfiniteAdamState(5), ckpt], enable_checkpointing=True)
    written = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert [p.name for p in written] == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]  # before the fault only
    for path in written:
        for state in torch.load(path, weights_only=True)["optimizer_states"][0]["state"].values():
            assert all(bool(torch.isfinite(v).all()) for v in state.values())


# ---------------------------------------------------------------------------------------- data ranges, every batch
def test_out_of_range_data_in_any_batch_is_named(tmp_path: Path) -> None:
    """8-bit pixels (0..255) in batch 13 only, with a Bernoulli likelihood: the loss stays finite, the run must not."""
    x = torch.rand(64, *SHAPE).round()
    x[13 * 4 : 14 * 4] = torch.randint(0, 256, (4, *SHAPE)).float()
    dm = TensorDataModule(x, val=x[:4], batch_size=4, shuffle=False)
    with pytest.raises(ValueError, match=r"expects targets in \[0, 1\], got values in \[0, 25\d\].*batch 13\)"):
        _fit(tiny_vae(likelihood="bernoulli"), tmp_path, dm=dm, max_epochs=1)


def test_a_nan_in_the_sanity_check_is_reported(tmp_path: Path) -> None:
    x = torch.rand(32, *SHAPE)
    val = x[:8].clone()
    val[5, 0, 1, 1] = float("nan")
    dm = TensorDataModule(x, val=val, batch_size=4)
    with pytest.raises(NonFiniteError, match=r"1 NaN or infinite values.*val batch 1"):
        _fit(tiny_vae(likelihood="gaussian"), tmp_path, dm=dm, limit_val_batches=None, num_sanity_val_steps=2)
    # skip policy: a warning that says it was the sanity check (the data check names the batch under "raise" only)
    with pytest.warns(UserWarning, match=r"Sanity check \(before training\): val: 1 of 2 batches"):
        _fit(tiny_vae(likelihood="gaussian", on_nonfinite="skip"), tmp_path, dm=dm, limit_val_batches=None,
             num_sanity_val_steps=2, max_steps=1)  # fmt: skip


# ---------------------------------------------------------------------------------------- skip: one read per step
def test_skip_reads_the_device_once_per_step(tmp_path: Path) -> None:
    """The skip policy's decision (loss and gradients finite, the loss's size) is one read per step, in the hook
    before the optimizer step; the training step itself reads nothing for it."""
    from support.host_reads import HostReads

    counter = HostReads()

    class Label(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            counter.label = batch_idx
            pl_module.data_check.every_cpu_batch = False  # an accelerator's schedule: no data reads on most steps

    vae = tiny_vae(on_nonfinite="skip")
    with counter.patched():
        counter.watch(vae, ("training_step", "on_before_optimizer_step"))
        _fit(vae, tmp_path, callbacks=[Label()], max_epochs=1, log_every_n_steps=1000)
    by_step: dict[int, list] = {}
    for read in counter.reads:
        by_step.setdefault(read.step, []).append(read)
    quiet = {step: reads for step, reads in by_step.items() if 10 < step < 15}  # no data check, no logging
    assert set(quiet) == {11, 12, 13, 14}
    for reads in quiet.values():  # (the CPU's clamp_log_var reads too: not the policy's, and not on accelerators)
        assert [r.where for r in reads if r.where.startswith("guard.py")] == [reads[-1].where], reads
        assert "(check_step)" in reads[-1].where
