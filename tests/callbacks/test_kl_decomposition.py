"""KLDecompositionMonitor: the three parts of a real VAE's KL over the validation set sum to its average KL, equal
the exact decomposition of the set, sit on one TensorBoard chart, and are the same under DDP as on one process; on
that set the minibatch-stratified estimate of q(z) agrees with the exact sum within its Monte Carlo error."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from support.collapse import ProtocolModule
from support.modules import DestroyProcessGroupAtExit, trainer_kwargs
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.plugins.custom_scalar import layout_pb2

from lightning_vae import VAE
from lightning_vae.callbacks import KLDecompositionMonitor, TensorBoardDashboard
from lightning_vae.data import ShapesDataModule
from lightning_vae.functional.kl_decomposition import aggregate_log_density, kl_decomposition, minibatch_log_density
from lightning_vae.nets import MLPDecoder, MLPEncoder

SHAPE = (1, 28, 28)
KEYS = ("mutual_info", "total_correlation", "dimension_kl", "kl")


def _vae(**kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder(SHAPE, latent_dim=4, hidden_sizes=(64,)), MLPDecoder(4, SHAPE, hidden_sizes=(64,)), **kwargs)


def _data(n_val: int = 150) -> ShapesDataModule:
    return ShapesDataModule(image_size=28, n_train=256, n_val=n_val, batch_size=32)


class _Collect(Callback):
    """Keeps every validation step's posterior parameters and samples, to recompute the decomposition here."""

    def __init__(self) -> None:
        self.loc, self.log_var, self.z = [], [], []

    def on_validation_epoch_start(self, trainer, pl_module):
        self.loc, self.log_var, self.z = [], [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        q = outputs["posterior"]
        self.loc.append(q.loc.double())
        self.log_var.append(q.log_var.double())
        self.z.append(outputs["z"].double())


def test_the_parts_of_a_trained_vae_sum_to_its_average_kl_and_equal_the_exact_decomposition(tmp_path: Path):
    monitor, collect = KLDecompositionMonitor(), _Collect()
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=8, limit_val_batches=None),
        callbacks=[monitor, collect],
    )
    trainer.fit(_vae(optimizer=lambda p: torch.optim.Adam(p, lr=3e-3)), _data())
    logged = {k: float(trainer.callback_metrics[f"kl_decomposition/{k}"]) for k in KEYS}
    parts = monitor.last
    assert parts["mutual_info"] + parts["total_correlation"] + parts["dimension_kl"] == pytest.approx(
        parts["kl"], rel=1e-12
    )
    assert parts["kl"] == pytest.approx(float(trainer.callback_metrics["val/kl"]), rel=1e-5)  # the module's val/kl
    assert logged == pytest.approx(parts, rel=1e-6)
    exact = kl_decomposition(torch.cat(collect.loc), torch.cat(collect.log_var), torch.cat(collect.z))
    for key in KEYS:
        assert parts[key] == pytest.approx(getattr(exact, key).item(), rel=1e-9, abs=1e-9), key
    assert 0.5 < parts["mutual_info"] <= math.log(150)  # a trained code carries information, at most log N
    assert parts["dimension_kl"] > 0

    # On this set q(z) is summed exactly; the minibatch-stratified estimate averages to it (tests/functional holds
    # the finer checks and MWS's bias).
    loc, log_var, z = torch.cat(collect.loc), torch.cat(collect.log_var), torch.cat(collect.z)
    exact_joint = aggregate_log_density(z, loc, log_var).joint
    g, ratios = torch.Generator().manual_seed(0), []
    for _ in range(1500):
        idx = torch.randperm(150, generator=g)[:16]
        ratios.append(
            (minibatch_log_density(z[idx], loc[idx], log_var[idx], 150, "mss").joint - exact_joint[idx]).exp()
        )
    ratios = torch.cat(ratios)
    assert abs(ratios.mean().item() - 1.0) < 4 * 2 * (ratios.std() / math.sqrt(ratios.numel())).item()


def _layouts(log_dir: str) -> list:
    (events_file,) = Path(log_dir).glob("events.out.tfevents.*")
    events = list(LegacyEventFileLoader(str(events_file)).Load())
    values = [v for e in events for v in e.summary.value if v.tag == "custom_scalars__config__"]
    return [layout_pb2.Layout.FromString(v.tensor.string_val[0]) for v in values]


@pytest.mark.parametrize("with_dashboard", [False, True])
def test_one_custom_scalars_chart_with_or_without_the_dashboard(tmp_path: Path, with_dashboard: bool):
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    callbacks = [KLDecompositionMonitor()] + ([TensorBoardDashboard(hparams=False)] if with_dashboard else [])
    trainer = Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=callbacks, max_epochs=1))
    trainer.fit(_vae(), _data(n_val=64))
    logger.experiment.flush()
    (layout,) = _layouts(logger.log_dir)  # TensorBoard shows a run's first layout: there is one
    categories = {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in layout.category}
    (tags,) = categories["KL decomposition"].values()
    assert [t.split("/")[1].rstrip("$") for t in tags] == list(KEYS)
    assert ("VAE" in categories) == with_dashboard


def test_a_mixture_prior_logs_mutual_information_and_total_correlation_only(tmp_path: Path):
    monitor = KLDecompositionMonitor()
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None), callbacks=[monitor])
    trainer.validate(_vae(prior="mixture", latent_dim=4), _data(n_val=64), verbose=False)
    assert set(monitor.last) == {"mutual_info", "total_correlation"}
    assert "kl_decomposition/dimension_kl" not in trainer.callback_metrics


def test_outputs_without_a_diagonal_gaussian_posterior_are_refused(tmp_path: Path):
    class NoPosterior(ProtocolModule):
        def validation_step(self, batch, batch_idx):
            return {"loss": torch.zeros(()), "z": torch.zeros(len(batch[0]), 3)}

    trainer = Trainer(**trainer_kwargs(tmp_path), callbacks=[KLDecompositionMonitor()])
    with pytest.raises(TypeError, match="'posterior' is a diagonal Gaussian over z"):
        trainer.validate(NoPosterior(n_data=8, val_batch_sizes=(8,)), verbose=False)
    with pytest.raises(ValueError, match="Expected `max_points` to be an int >= 1, got 0"):
        KLDecompositionMonitor(max_points=0)
    clone = pickle.loads(pickle.dumps(KLDecompositionMonitor(max_points=7)))  # what ddp_spawn does to it
    assert clone.max_points == 7 and clone.metric.max_points == 7
    with pytest.raises(TypeError, match="Expected `tensorboard_chart` to be a bool"):
        KLDecompositionMonitor(tensorboard_chart="yes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ DDP
VAL_SIZES = (32, 32, 32, 32, 14)  # uneven shards: rank 0 takes batches 0, 2, 4 and rank 1 batches 1, 3


class _Dump(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module):
        monitor = next(c for c in trainer.callbacks if isinstance(c, KLDecompositionMonitor))
        torch.save(monitor.last, f"{self.path}.rank{trainer.global_rank}")


def _validate(tmp_path: Path, tag: str, **kwargs) -> dict:
    torch.manual_seed(0)
    model = ProtocolModule(n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES)  # fixed noise: the same z anywhere
    dump = str(tmp_path / tag)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, limit_val_batches=None, use_distributed_sampler=False, **kwargs),
        callbacks=[KLDecompositionMonitor(), _Dump(dump), DestroyProcessGroupAtExit()],
    )
    trainer.validate(model, verbose=False)
    return {rank: torch.load(f"{dump}.rank{rank}") for rank in range(kwargs.get("devices", 1))}


def test_ddp_gathers_the_posteriors_and_gives_the_numbers_of_one_process(tmp_path: Path):
    (single,) = _validate(tmp_path, "single").values()
    ddp = _validate(tmp_path, "ddp", strategy="ddp_spawn", devices=2)
    for rank in (0, 1):
        assert ddp[rank] == pytest.approx(single, rel=1e-9, abs=1e-12), rank
    assert single["kl"] > 0.01 and set(single) == set(KEYS)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@requires_cuda
def test_on_a_gpu_the_monitor_gives_the_numbers_of_the_cpu(tmp_path: Path):
    def run(accelerator: str) -> dict:
        torch.manual_seed(0)
        model = ProtocolModule(n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES)
        monitor = KLDecompositionMonitor()
        kwargs = trainer_kwargs(tmp_path, accelerator=accelerator, limit_val_batches=None)
        Trainer(**kwargs, callbacks=[monitor]).validate(model, verbose=False)
        return monitor.last

    assert run("gpu") == pytest.approx(run("cpu"), rel=1e-4, abs=1e-6)
