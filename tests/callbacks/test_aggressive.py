"""AggressiveEncoderTraining: encoder-only inner steps, decoder-only outer steps, MI switch-off, resumable, DDP."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from support.collapse import ProtocolModule, train_loader
from support.modules import DestroyProcessGroupAtExit, tiny_vae, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae.callbacks import AggressiveEncoderTraining


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


class Spy(Callback):
    """Placed before and after the aggressive callback: sees the weights around the inner loop and the outer step."""

    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self._start: dict[str, list[torch.Tensor]] = {}

    def snapshot(self, pl_module: LightningModule, tag: str) -> None:
        self._start[tag] = {"enc": _snapshot(pl_module.encoder), "dec": _snapshot(pl_module.decoder)}  # type: ignore

    def changed(self, pl_module: LightningModule, tag: str) -> dict[str, bool]:
        snap = self._start[tag]
        return {"enc": _changed(snap["enc"], pl_module.encoder), "dec": _changed(snap["dec"], pl_module.decoder)}


class Before(Callback):
    def __init__(self, spy: Spy) -> None:
        self.spy = spy

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.spy.snapshot(pl_module, "before_inner")


class After(Callback):
    def __init__(self, spy: Spy, aggressive: AggressiveEncoderTraining) -> None:
        self.spy, self.aggressive = spy, aggressive

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.spy.log.append({"inner": self.spy.changed(pl_module, "before_inner"), "active": self.aggressive.active})
        self.spy.snapshot(pl_module, "before_outer")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.spy.log[-1]["outer"] = self.spy.changed(pl_module, "before_outer")
        self.spy.log[-1]["steps"] = self.aggressive.last_inner_steps


def _vae_data(n: int = 96) -> DataLoader:
    x = torch.bernoulli(torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    return DataLoader(TensorDataset(x), batch_size=16, shuffle=True)


@pytest.mark.parametrize("kind", ["vae", "user_module"])
def test_inner_steps_update_the_encoder_only_and_the_outer_step_the_decoder_only(tmp_path, kind):
    if kind == "vae":
        model, data = tiny_vae(), _vae_data()
    else:
        model, data = ProtocolModule(), train_loader(96, batch_size=16)
    aggressive = AggressiveEncoderTraining(max_inner_steps=6, check_every=3, mi_batches=2, max_epochs=1)
    spy = Spy()
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0),
        callbacks=[Before(spy), aggressive, After(spy, aggressive)],
    )
    trainer.fit(model, data)
    first, later = spy.log[:3], spy.log[3:]
    for step in first:  # aggressive epoch
        assert step["active"] and 1 <= step["steps"] <= 6
        assert step["inner"] == {"enc": True, "dec": False}
        assert step["outer"] == {"enc": False, "dec": True}
    assert not aggressive.active and aggressive.aggressive_epochs == 1  # max_epochs=1 switched it off
    for step in later:  # joint updates again, no inner steps
        assert step["inner"] == {"enc": False, "dec": False}
        assert step["outer"] == {"enc": True, "dec": True}
    assert aggressive.inner_steps_total == sum(s["steps"] for s in first)
    assert len(aggressive.mi_history) == 1


class ScriptedLoss(LightningModule):
    """The inner loss follows a script (with zero gradients), to test when the inner loop stops."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(1, 2), nn.Linear(1, 1)
        self.script, self.calls = script, 0

    def training_loss(self, batch: Any) -> torch.Tensor:
        value = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return self.encoder.weight.sum() * 0.0 + value

    def encode(self, x: torch.Tensor):
        loc, log_var = self.encoder(x).chunk(2, dim=-1)
        return torch.distributions.Independent(torch.distributions.Normal(loc, log_var.exp()), 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.decoder(batch[0]).sum()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ([5, 4, 3, 2, 2.5, 2.6, 1, 1], 6),  # window means 4.5, 2.5, 2.55: the third got worse
        ([5, 4, 3, 2, 1, 0, -1, -2], 7),  # always improving: bounded by max_inner_steps
    ],
)
def test_the_inner_loop_stops_when_the_loss_stops_improving_or_at_the_bound(tmp_path, script, expected):
    model = ScriptedLoss(script)
    aggressive = AggressiveEncoderTraining(max_inner_steps=7, check_every=2, mi_batches=1)
    data = DataLoader(TensorDataset(torch.randn(8, 1)), batch_size=4)
    Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0), callbacks=[aggressive]
    ).fit(model, data)
    assert aggressive.last_inner_steps == expected == model.calls


def test_switches_off_when_mutual_information_stops_improving(tmp_path):
    # The decoder ignores z, so training drives q(z|x) to the prior and I(x; z) falls from epoch to epoch.
    model = ProtocolModule(decoder_uses_z=False)
    aggressive = AggressiveEncoderTraining(max_inner_steps=4, check_every=2, mi_batches=4)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=4, limit_train_batches=4, limit_val_batches=0), callbacks=[aggressive]
    )
    trainer.fit(model, train_loader())
    assert not aggressive.active
    assert aggressive.aggressive_epochs == 2  # the first epoch only sets the reference
    assert aggressive.mi_history[1] < aggressive.mi_history[0]
    assert aggressive.switched_off_at_step == 8
    assert trainer.callback_metrics["aggressive/active"] == 0.0


def test_state_is_in_the_checkpoint_and_resumes(tmp_path):
    model = tiny_vae()
    aggressive = AggressiveEncoderTraining(max_inner_steps=3, check_every=3, mi_batches=2)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    kwargs = trainer_kwargs(
        tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=True
    )
    Trainer(**kwargs, callbacks=[aggressive, ckpt]).fit(model, _vae_data())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]["AggressiveEncoderTraining"]
    assert saved["active"] and saved["aggressive_epochs"] == 1 and saved["mi_history"] == aggressive.mi_history
    assert saved["optimizer"]["state"]  # the inner Adam moments are kept
    resumed = AggressiveEncoderTraining(max_inner_steps=3, check_every=3, mi_batches=2)
    Trainer(**{**kwargs, "max_epochs": 2}, callbacks=[resumed]).fit(
        model, _vae_data(), ckpt_path=tmp_path / "ckpt" / "last.ckpt"
    )
    assert resumed.mi_history[0] == aggressive.mi_history[0] and len(resumed.mi_history) == 2
    assert resumed.inner_steps_total > aggressive.inner_steps_total
    step = resumed.state_dict()["optimizer"]["state"][0]["step"]
    assert float(step) == resumed.inner_steps_total  # Adam's step count continued from the checkpoint
    clone = pickle.loads(pickle.dumps(AggressiveEncoderTraining()))
    clone.load_state_dict({"active": False})  # an older or partial state
    assert not clone.active and clone.mi_history == []


def test_arguments_and_protocol_are_validated(tmp_path):
    for kwargs, error, match in (
        ({"max_inner_steps": 0}, ValueError, "Expected `max_inner_steps` to be an int >= 1, got 0"),
        ({"check_every": -1}, ValueError, "Expected `check_every` to be an int >= 1, got -1"),
        ({"mi_batches": 1.5}, TypeError, r"Expected `mi_batches` to be an int, got 1.5 \(float\)"),
        ({"max_epochs": 0}, ValueError, "Expected `max_epochs` to be an int >= 1, got 0"),
        ({"gradient_clip_val": 0.0}, ValueError, "Expected `gradient_clip_val` to be a finite float > 0, got 0.0"),
        ({"gradient_clip_val": float("inf")}, ValueError, "Expected `gradient_clip_val` to be a finite float, got inf"),
        ({"gradient_clip_val": "5"}, TypeError, "Expected `gradient_clip_val` to be a finite float, got '5'"),
        ({"seed": None}, TypeError, "Expected `seed` to be an int, got None"),
    ):
        with pytest.raises(error, match=match):
            AggressiveEncoderTraining(**kwargs)

    class NoEncoder(LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    expected = (
        r"^AggressiveEncoderTraining needs `encoder`, `decoder`, `training_loss` and `encode` on the module, and "
        r"NoEncoder has no `encoder`, `decoder`, `training_loss` and `encode`\."
    )
    with pytest.raises(TypeError, match=expected):
        Trainer(**trainer_kwargs(tmp_path), callbacks=[AggressiveEncoderTraining()]).fit(
            NoEncoder(), DataLoader(TensorDataset(torch.randn(4, 1)), batch_size=2)
        )

    class EncoderByName(NoEncoder):
        encoder, decoder = "mlp", nn.Identity()

        def training_loss(self, batch):
            return self.net(batch[0]).sum()

        def encode(self, x):
            raise NotImplementedError

    with pytest.raises(TypeError, match=r"Expected `EncoderByName.encoder` to be a torch.nn.Module, got 'mlp' \(str\)"):
        Trainer(**trainer_kwargs(tmp_path), callbacks=[AggressiveEncoderTraining()]).fit(
            EncoderByName(), DataLoader(TensorDataset(torch.randn(4, 1)), batch_size=2)
        )


# ------------------------------------------------------------------------------------------------ DDP
class _DumpEncoder(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module):
        aggressive = next(c for c in trainer.callbacks if isinstance(c, AggressiveEncoderTraining))
        torch.save(
            {
                "encoder": pl_module.encoder.state_dict(),
                "steps": aggressive.inner_steps_total,
                "mi": aggressive.mi_history,
            },
            f"{self.path}.rank{trainer.global_rank}",
        )


def test_ddp_keeps_the_encoder_identical_on_every_rank(tmp_path):
    dump = str(tmp_path / "ddp")
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0, devices=2),
        strategy="ddp_spawn",
        callbacks=[
            AggressiveEncoderTraining(max_inner_steps=4, check_every=2, mi_batches=2),
            _DumpEncoder(dump),
            DestroyProcessGroupAtExit(),
        ],
    )
    trainer.fit(ProtocolModule(), train_loader(128, batch_size=16))
    ranks = [torch.load(f"{dump}.rank{r}") for r in range(2)]
    for name, value in ranks[0]["encoder"].items():
        torch.testing.assert_close(ranks[1]["encoder"][name], value, rtol=0, atol=0, msg=name)
    assert ranks[0]["steps"] == ranks[1]["steps"] > 3  # the same stopping decisions on both ranks
    assert ranks[0]["mi"] == ranks[1]["mi"]


# ------------------------------------------------------------------------------------------------ non-finite
class InjectInf:
    """A gradient hook on one encoder parameter: the ``at``-th gradient computed for it is all inf."""

    def __init__(self, param: torch.Tensor, at: int) -> None:
        self.calls, self.at = 0, at
        param.register_hook(self)

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full_like(grad, float("inf")) if self.calls == self.at else grad


def _adam_state_finite(aggressive: AggressiveEncoderTraining) -> bool:
    state = aggressive.updates.optimizer.state_dict()["state"]  # type: ignore[union-attr]
    return bool(state) and all(torch.isfinite(t).all() for s in state.values() for t in s.values())


def _fit_with_inf(tmp_path, **trainer_extra: Any) -> tuple[Any, AggressiveEncoderTraining, InjectInf]:
    model = tiny_vae()
    # The second gradient of the first encoder weight: the second inner step of the first batch.
    inject = InjectInf(next(model.encoder.parameters()), at=2)
    aggressive = AggressiveEncoderTraining(max_inner_steps=4, check_every=10, mi_batches=1, max_epochs=1)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0),
        callbacks=[aggressive],
        **trainer_extra,
    )
    trainer.fit(model, _vae_data())
    return model, aggressive, inject


def test_an_inf_inner_gradient_skips_that_step_and_the_encoder_stays_finite(tmp_path):
    model, aggressive, inject = _fit_with_inf(tmp_path)
    assert inject.calls > 2
    assert aggressive.skipped_inner_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert _adam_state_finite(aggressive)
    step = aggressive.updates.optimizer.state_dict()["state"][0]["step"]  # type: ignore[union-attr]
    assert float(step) == aggressive.inner_steps_total - 1  # the skipped step left Adam's step count alone


def test_under_16_bit_mixed_precision_the_inner_steps_have_their_own_gradient_scaler(tmp_path):
    """16-mixed with a gradient scaler, as on a GPU (here CPU autocast): an overflow is skipped and lowers the scale."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))
    model, aggressive, _ = _fit_with_inf(tmp_path, plugins=[plugin])
    assert aggressive.updates.scaler is not None and aggressive.updates.scaler is not plugin.scaler
    assert aggressive.skipped_inner_steps == 1
    assert aggressive.updates.scaler.get_scale() < 2.0**10  # backed off once (and never grew: too few steps)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert _adam_state_finite(aggressive)
    assert aggressive.state_dict()["scaler"]["scale"] == aggressive.updates.scaler.get_scale()  # checkpointed


def test_a_nan_inner_loss_ends_the_inner_loop_without_touching_the_encoder(tmp_path):
    model = tiny_vae()
    calls = {"n": 0}
    loss_fn = model.training_loss

    def training_loss(batch):
        calls["n"] += 1
        loss = loss_fn(batch)
        return loss * float("nan") if calls["n"] == 2 else loss

    model.training_loss = training_loss  # type: ignore[method-assign]
    aggressive = AggressiveEncoderTraining(max_inner_steps=5, check_every=10, mi_batches=1, max_epochs=1)
    spy = Spy()
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0),
        callbacks=[Before(spy), aggressive, After(spy, aggressive)],
    )
    trainer.fit(model, _vae_data())
    assert spy.log[0]["steps"] == 2 and aggressive.skipped_inner_steps == 1  # stopped at the NaN step
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert _adam_state_finite(aggressive)


# ------------------------------------------------------------------------------------------------ the outer step
class _OverflowInOuterStep(Callback):
    """After the aggressive callback: an encoder weight's gradient is inf whenever the outer step computes one."""

    def __init__(self) -> None:
        self.outer = False
        self.injected = 0

    def setup(self, trainer, pl_module, stage):
        next(pl_module.encoder.parameters()).register_hook(self._hook)

    def _hook(self, grad: torch.Tensor) -> torch.Tensor:
        if not self.outer:
            return grad
        self.injected += 1
        return torch.full_like(grad, float("inf"))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.outer = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outer = False


def test_under_16_bit_mixed_precision_an_encoder_overflow_does_not_skip_the_decoder_step(tmp_path):
    """The outer step's scaler unscales every gradient of the optimiser before on_before_optimizer_step: an inf
    there in the encoder's (dropped anyway) skipped the decoder's step and halved the run's scale."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))
    aggressive = AggressiveEncoderTraining(max_inner_steps=2, check_every=10, mi_batches=1, max_epochs=1)
    overflow, spy = _OverflowInOuterStep(), Spy()
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0),
        plugins=[plugin],
        callbacks=[Before(spy), aggressive, After(spy, aggressive), overflow],
    )
    model = tiny_vae()
    trainer.fit(model, _vae_data())
    assert overflow.injected == 0  # no encoder gradient in the outer steps: nothing to overflow
    assert all(step["outer"] == {"enc": False, "dec": True} for step in spy.log) and len(spy.log) == 3
    assert plugin.scaler.get_scale() == 2.0**10  # never lowered (too few steps to grow)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())  # given back after each step


#: Elements of encoder parameters in the buckets DDP all-reduced, and the encoder's parameters, in this process.
_DDP_ENCODER_ELEMENTS: list[int] = []
_ENCODER_IDS: set[int] = set()


def _counting_allreduce_hook(state, bucket):  # unannotated: DDP checks the annotations it finds
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    _DDP_ENCODER_ELEMENTS.append(sum(p.numel() for p in bucket.parameters() if id(p) in _ENCODER_IDS))
    return allreduce_hook(state, bucket)


class _DumpState(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer, pl_module):
        _ENCODER_IDS.update(id(p) for p in pl_module.encoder.parameters())
        trainer.strategy.model.register_comm_hook(None, _counting_allreduce_hook)  # DDP's own all-reduce, counted

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state": state, "sent": sum(_DDP_ENCODER_ELEMENTS)}, f"{self.path}.rank{trainer.global_rank}")


def test_under_ddp_the_outer_step_neither_sends_the_encoder_gradients_nor_lets_the_ranks_drift(tmp_path):
    """The outer steps' gradients are averaged over the ranks without the encoder's (computed and all-reduced by DDP,
    then dropped, before); every weight stays identical on both ranks."""
    dump = str(tmp_path / "ddp")
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0, devices=2),
        strategy="ddp_spawn",
        callbacks=[
            AggressiveEncoderTraining(max_inner_steps=2, check_every=2, mi_batches=1),
            _DumpState(dump),
            DestroyProcessGroupAtExit(),
        ],
    )
    model = ProtocolModule()
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.fit(model, train_loader(128, batch_size=16))
    ranks = [torch.load(f"{dump}.rank{r}") for r in range(2)]
    assert ranks[0]["sent"] == ranks[1]["sent"] == 0
    for name, value in ranks[0]["state"].items():
        torch.testing.assert_close(ranks[1]["state"][name], value, rtol=0, atol=0, msg=name)
    assert all(not torch.equal(initial[k], v) for k, v in ranks[0]["state"].items() if k.startswith("decoder"))
