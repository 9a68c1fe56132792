"""PosteriorCollapseMonitor: flags a collapsed model, not a healthy one; same numbers on one process and under DDP."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from support.collapse import ProtocolModule, train_loader
from support.modules import DestroyProcessGroupAtExit, trainer_kwargs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_vae import VAE
from lightning_vae.callbacks import PosteriorCollapseMonitor
from lightning_vae.data import ShapesDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder

VAL_SIZES = (32, 32, 32, 32, 14)  # an uneven last batch


def _collapse_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "Posterior collapse" in str(w.message)]


def test_flags_a_model_whose_decoder_ignores_z_and_stops(tmp_path):
    model = ProtocolModule(decoder_uses_z=False, n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES)
    monitor = PosteriorCollapseMonitor(patience=2, stop_on_collapse=True)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=30, limit_train_batches=None, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.fit(model, train_loader())
    messages = _collapse_warnings(record)
    assert len(messages) == 1  # warned once
    assert (
        "0/3 active units" in messages[0] and "free bits" in messages[0] and "AggressiveEncoderTraining" in messages[0]
    )
    assert monitor.last["active_units"] == 0
    assert abs(monitor.last["mutual_info"]) < 0.05
    assert monitor.last["collapsed_dims"] == 3
    assert trainer.current_epoch < 29  # stopped early
    assert trainer.callback_metrics["collapse/active_units"] == 0


def test_a_run_that_ends_collapsed_before_patience_is_told_at_the_end(tmp_path):
    # A shortened run: two checks, both collapsed, patience 3. Nothing during the run, one warning at its end.
    model = ProtocolModule(decoder_uses_z=False, n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES)
    monitor = PosteriorCollapseMonitor(patience=3)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=None, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.fit(model, train_loader())
    (message,) = _collapse_warnings(record)
    assert message.startswith("Posterior collapse at the end of training: the last 2 validation checks (fewer than ")
    assert "patience=3" in message and "0/3 active units" in message and "free bits" in message
    # A run whose last check is healthy after collapsed ones is not flagged.
    monitor = PosteriorCollapseMonitor(patience=3)
    monitor.collapsed_checks, monitor._last_check = 0, {"active_units": 2}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        monitor.on_train_end(trainer, model)
    assert not _collapse_warnings(record)


def test_a_healthy_vae_on_shapes_is_not_flagged(tmp_path):
    dm = ShapesDataModule(image_size=28, n_train=1536, n_val=256, batch_size=64)
    vae = VAE(
        MLPEncoder((1, 28, 28), latent_dim=6, hidden_sizes=(128,)),
        MLPDecoder(6, (1, 28, 28), hidden_sizes=(128,)),
        optimizer=lambda params: torch.optim.Adam(params, lr=3e-3),
    )
    monitor = PosteriorCollapseMonitor(patience=1)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=3, limit_train_batches=None, limit_val_batches=None, callbacks=[monitor])
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.fit(vae, dm)
    assert not _collapse_warnings(record)
    assert monitor.last["active_units"] >= 2
    assert monitor.last["mutual_info"] > 1.0
    assert len(monitor.history) == 3 and len(monitor.history[0]) == 6


def test_logged_values_match_an_offline_numpy_reference(tmp_path):
    dm = ShapesDataModule(image_size=28, n_train=64, n_val=100, batch_size=32)  # batches 32, 32, 32, 4
    vae = VAE(MLPEncoder((1, 28, 28), latent_dim=5, hidden_sizes=(32,)), MLPDecoder(5, (1, 28, 28), hidden_sizes=(32,)))
    monitor = PosteriorCollapseMonitor(activity_threshold=1e-4, kl_threshold=0.05)
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None, callbacks=[monitor]))
    metrics = trainer.validate(vae, dm, verbose=False)[0]
    dm.setup("validate")
    with torch.no_grad():
        q = vae.encode(dm.val_set.images)
    mean, var = q.mean.double().numpy(), q.variance.double().numpy()
    kl = 0.5 * (var + mean**2 - 1 - np.log(var))  # KL(q || N(0, 1)), by hand
    kl_per_dim = kl.mean(0)
    np.testing.assert_allclose(np.array(monitor.history[-1]), kl_per_dim, rtol=1e-4, atol=1e-6)
    assert metrics["collapse/active_units"] == int((np.var(mean, axis=0, ddof=1) > 1e-4).sum())
    assert metrics["collapse/collapsed_dims"] == int((kl_per_dim < 0.05).sum())
    assert metrics["collapse/mutual_info"] <= np.log(32) + 1e-6


def test_iw_nll_is_logged_and_tighter_than_the_elbo(tmp_path):
    dm = ShapesDataModule(image_size=28, n_train=64, n_val=64, batch_size=32)
    vae = VAE(MLPEncoder((1, 28, 28), latent_dim=4, hidden_sizes=(32,)), MLPDecoder(4, (1, 28, 28), hidden_sizes=(32,)))
    monitor = PosteriorCollapseMonitor(iw_samples=50, iw_chunk_size=400)
    metrics = Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor])).validate(vae, dm, verbose=False)[0]
    assert metrics["collapse/nll_iw"] <= -metrics["val/elbo"] + 0.5
    assert metrics["collapse/nll_iw"] > 0
    expected = (
        r"PosteriorCollapseMonitor\(iw_samples=5\) needs `encode` and `log_joint` on the module, and \w+ has no "
        r"`log_joint`\..* Or give it `log_weights\(x, n_samples\)`, the importance weights of every latent group\.$"
    )
    with pytest.raises(TypeError, match=expected):
        bare = ProtocolModule(n_data=8, val_batch_sizes=(8,))
        del ProtocolModule.log_joint  # a module without the NLL protocol
        try:
            Trainer(**trainer_kwargs(tmp_path, callbacks=[PosteriorCollapseMonitor(iw_samples=5)])).validate(
                bare, verbose=False
            )
        finally:
            ProtocolModule.log_joint = _LOG_JOINT


_LOG_JOINT = ProtocolModule.log_joint


def test_tensorboard_histogram_heatmap_and_other_loggers(tmp_path):
    model = ProtocolModule(n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES)
    logger = TensorBoardLogger(tmp_path, name="tb")
    monitor = PosteriorCollapseMonitor()
    Trainer(**trainer_kwargs(tmp_path, max_epochs=3, logger=logger, callbacks=[monitor])).fit(model, train_loader())
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    assert "collapse/kl_per_dim" in events.Tags()["histograms"]
    images = events.Images("collapse/kl_per_dim_heatmap")
    assert len(images) == 3  # one per validation check (the sanity check is left out)
    assert images[-1].width == 3 * 12 + 2 + 12 and images[-1].height == 3 * 12  # 3 checks x 3 dims, gap, colour bar
    for key in ("collapse/active_units", "collapse/mutual_info", "collapse/collapsed_dims"):
        assert key in events.Tags()["scalars"]
    # The histogram and the heat map sit on the x of the check's scalars.
    checks = [e.step for e in events.Scalars("collapse/active_units")]
    assert [e.step for e in images] == [e.step for e in events.Histograms("collapse/kl_per_dim")] == checks
    # Other loggers get the scalars and no error.
    csv = CSVLogger(tmp_path, name="csv")
    Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=csv, callbacks=[PosteriorCollapseMonitor()])).fit(
        ProtocolModule(n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES), train_loader()
    )
    assert "collapse/active_units" in (Path(csv.log_dir) / "metrics.csv").read_text()


@pytest.mark.filterwarnings("ignore:Posterior collapse")
def test_state_resume_pickle_and_state_key(tmp_path):
    monitor = PosteriorCollapseMonitor(min_active_units=2)
    assert (
        monitor.state_key == "PosteriorCollapseMonitor{'activity_threshold': 0.01, 'kl_threshold': 0.01, "
        "'min_active_units': 2, 'min_mutual_info': 0.1}"
    )
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    model = ProtocolModule(decoder_uses_z=False, n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES)
    kwargs = trainer_kwargs(tmp_path, max_epochs=2, enable_checkpointing=True)
    Trainer(**kwargs, callbacks=[monitor, ckpt]).fit(model, train_loader())
    resumed = PosteriorCollapseMonitor(min_active_units=2)
    trainer = Trainer(**{**kwargs, "max_epochs": 3}, callbacks=[resumed])
    trainer.fit(model, train_loader(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.history[:2] == monitor.history and len(resumed.history) == 3
    assert resumed.history_steps[:2] == monitor.history_steps
    clone = pickle.loads(pickle.dumps(resumed))
    assert clone.state_dict() == resumed.state_dict()
    old = PosteriorCollapseMonitor()
    old.load_state_dict({"history": [[1.0]]})  # an older checkpoint without the newer keys
    assert old.collapsed_checks == 0 and old.history == [[1.0]]


def test_arguments_and_protocol_are_validated(tmp_path):
    with pytest.raises(ValueError, match="Expected `patience` to be an int >= 1, got 0"):
        PosteriorCollapseMonitor(patience=0)
    with pytest.raises(ValueError, match="Expected `activity_threshold` to be a finite float >= 0, got -0.1"):
        PosteriorCollapseMonitor(activity_threshold=-0.1)
    with pytest.raises(ValueError, match="Expected `kl_threshold` to be a finite float, got nan"):
        PosteriorCollapseMonitor(kl_threshold=float("nan"))  # a wrong value (was a TypeError)
    with pytest.raises(ValueError, match="Expected `min_mutual_info` to be a finite float, got -inf"):
        PosteriorCollapseMonitor(min_mutual_info=float("-inf"))
    with pytest.raises(TypeError, match=r"Expected `min_active_units` to be an int, got 1.5 \(float\)"):
        PosteriorCollapseMonitor(min_active_units=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Expected `iw_samples` to be an int, got True \(bool\)"):
        PosteriorCollapseMonitor(iw_samples=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `iw_chunk_size` to be an int >= 1, got 0"):
        PosteriorCollapseMonitor(iw_chunk_size=0)
    assert PosteriorCollapseMonitor(min_mutual_info=-1.0).min_mutual_info == -1.0  # any finite floor

    class NoProtocol(ProtocolModule):
        def validation_step(self, batch, batch_idx):
            return torch.zeros(())

    model = NoProtocol(n_data=8, val_batch_sizes=(8,))
    with pytest.raises(TypeError, match="'posterior'"):
        Trainer(**trainer_kwargs(tmp_path, callbacks=[PosteriorCollapseMonitor()])).validate(model, verbose=False)


# ------------------------------------------------------------------------------------------------ DDP
class _DumpHistory(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module):
        monitor = next(c for c in trainer.callbacks if isinstance(c, PosteriorCollapseMonitor))
        torch.save({"history": monitor.history, "last": monitor.last}, f"{self.path}.rank{trainer.global_rank}")


class _SeedPerBatch(Callback):
    """Seeds each batch by its first example, so the monitor's importance samples match on any process."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        torch.manual_seed(int(batch[1][0]))


def _validate(tmp_path: Path, tag: str, **kwargs) -> dict:
    torch.manual_seed(0)
    model = ProtocolModule(n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES)
    dump = str(tmp_path / tag)
    monitor = PosteriorCollapseMonitor(kl_threshold=0.05, iw_samples=8)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, limit_val_batches=None, use_distributed_sampler=False, **kwargs),
        callbacks=[_SeedPerBatch(), monitor, _DumpHistory(dump), DestroyProcessGroupAtExit()],
    )
    metrics = trainer.validate(model, verbose=False)[0]
    return {"metrics": metrics, **torch.load(f"{dump}.rank0")}


def test_ddp_gives_the_numbers_of_one_process(tmp_path):
    single = _validate(tmp_path, "single")
    ddp = _validate(tmp_path, "ddp", strategy="ddp_spawn", devices=2)
    for key in ("collapse/active_units", "collapse/mutual_info", "collapse/collapsed_dims", "collapse/nll_iw"):
        assert float(ddp["metrics"][key]) == pytest.approx(float(single["metrics"][key]), rel=1e-6, abs=1e-9), key
    np.testing.assert_allclose(ddp["history"][-1], single["history"][-1], rtol=1e-6)
    rank1 = torch.load(str(tmp_path / "ddp") + ".rank1")
    assert rank1["last"] == ddp["last"]  # every rank computed the same values
    assert single["last"]["mutual_info"] > 0.01
