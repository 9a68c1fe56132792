"""Training in float64 (``Trainer(precision="64-true")``): every model, likelihood and prior computes in float64.

Half-precision network outputs are computed on in float32; float32 and float64 are kept as they are
(``functional.math.at_least_float32``), so a float64 model's loss, reported values and importance-weighted NLL are
float64 throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from support.modules import tiny_vae, trainer_kwargs
from support.objective import DATA, SETTINGS, make_vae, step

from lightning_vae import VAE
from lightning_vae.callbacks import (
    LatentEmbeddingLogger,
    LatentTraversalLogger,
    PosteriorCollapseMonitor,
    PriorSampleLogger,
    ReconstructionLogger,
    TensorBoardDashboard,
)
from lightning_vae.data import TensorDataModule
from lightning_vae.metrics import ImportanceWeightedNLL
from lightning_vae.models import FlowVAEModel, LadderVAEModel, StackedVAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder

SHAPE = (1, 8, 8)


class _Dtypes(Callback):
    def __init__(self) -> None:
        self.seen: set[torch.dtype] = set()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        self.seen |= {outputs["loss"].dtype, outputs["kl"].dtype}


MODELS: dict[str, Callable[[], VAE]] = {
    "bernoulli": lambda: tiny_vae(),
    "gaussian_learned": lambda: tiny_vae(likelihood="gaussian_learned"),
    "laplace": lambda: tiny_vae(likelihood="laplace"),
    "categorical": lambda: VAE(
        MLPEncoder(SHAPE, latent_dim=4, hidden_sizes=(16,)),
        MLPDecoder(4, SHAPE, hidden_sizes=(16,), params_per_element=256),
        likelihood="categorical",
    ),
    "logistic_mixture": lambda: VAE(
        MLPEncoder(SHAPE, latent_dim=4, hidden_sizes=(16,)),
        MLPDecoder(4, SHAPE, hidden_sizes=(16,), params_per_element=15),
        likelihood="logistic_mixture",
    ),
    "iwae": lambda: tiny_vae(n_samples=3),
    "learnable prior": lambda: tiny_vae(prior="learnable"),
    "mixture prior": lambda: tiny_vae(prior="mixture", prior_components=3),
    "vamp prior": lambda: tiny_vae(prior="vamp", prior_components=3),
    "free bits": lambda: tiny_vae(free_bits=0.5),
    "stacked": lambda: VAE(model=StackedVAEModel(SHAPE, latent_sizes=(4, 2), hidden_sizes=((8,), (8,)))),
    "ladder": lambda: VAE(model=LadderVAEModel(SHAPE, latent_sizes=(4, 2), hidden_sizes=((8,), (8,)))),
    "iaf": lambda: VAE(model=FlowVAEModel(MLPEncoder(SHAPE, latent_dim=3), MLPDecoder(3, SHAPE), posterior="iaf")),
    "full covariance": lambda: VAE(
        model=FlowVAEModel(MLPEncoder(SHAPE, latent_dim=3), MLPDecoder(3, SHAPE), posterior="full_covariance")
    ),
}


def _data(name: str) -> torch.Tensor:
    if name in ("categorical", "logistic_mixture"):
        return torch.randint(0, 256, (16, *SHAPE)).float() / 255
    if name in ("gaussian_learned", "laplace"):
        return torch.randn(16, *SHAPE)
    return torch.rand(16, *SHAPE).round()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_float64_run_trains_and_evaluates_in_float64(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    vae = MODELS[name]()
    data = _data(name)
    dtypes = _Dtypes()
    trainer = Trainer(**trainer_kwargs(tmp_path, precision="64-true", max_epochs=1), callbacks=[dtypes])
    trainer.fit(vae, datamodule=TensorDataModule(data, val=data[:8], batch_size=4))
    assert dtypes.seen == {torch.float64}
    assert {p.dtype for p in vae.parameters()} == {torch.float64}
    assert all(torch.isfinite(v).all() for v in trainer.callback_metrics.values())
    vae.eval()
    metric = ImportanceWeightedNLL(n_samples=8).double()
    with torch.no_grad():
        metric.update(vae, data[:4].double())
        value = metric.compute()
    assert value.dtype == torch.float64 and torch.isfinite(value)


@pytest.mark.parametrize("precision", ["64-true", "32-true"])
def test_evaluation_values_are_reported_in_the_module_type(tmp_path: Path, precision: str) -> None:
    """val/* and collapse/* of a float64 run are float64 (the torchmetrics means kept float32 states, the monitor's
    Python numbers became float32), and float32 in a float32 run; a later validate keeps the type."""
    torch.manual_seed(0)
    vae = tiny_vae(n_eval_samples=3)
    data = torch.rand(16, *SHAPE).round()
    monitor = PosteriorCollapseMonitor(log_images=False, iw_samples=3)
    trainer = Trainer(**trainer_kwargs(tmp_path, precision=precision, max_epochs=1), callbacks=[monitor])
    dm = TensorDataModule(data, val=data[:8], batch_size=4)
    trainer.fit(vae, datamodule=dm)
    expected = torch.float64 if precision == "64-true" else torch.float32
    keys = ("val/loss", "val/elbo", "val/recon", "val/kl", "val/nll_iw", "val/bits_per_dim")
    keys += ("collapse/active_units", "collapse/mutual_info", "collapse/collapsed_dims", "collapse/nll_iw")
    for stage in ("fit", "validate"):
        metrics = trainer.callback_metrics
        assert {key: metrics[key].dtype for key in keys} == dict.fromkeys(keys, expected), stage
        trainer.validate(vae, datamodule=dm, verbose=False)


@pytest.mark.parametrize("likelihood", sorted(DATA))
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()) or "plain")
def test_fast_and_general_paths_agree_in_float64(likelihood: str, settings: dict) -> None:
    """The fast path against the general one in float64: the same loss, reported values and gradients to 1e-9."""
    vae = make_vae(likelihood, **settings).double()
    x = DATA[likelihood]().double()
    for report in (True, False):
        general, grads_general = step(vae, x, fast=False, report=report)
        fast, grads_fast = step(vae, x, fast=True, report=report)
        assert fast.loss.dtype == torch.float64
        for name in ("loss", "recon", "kl", "kl_penalty", "elbo", "kl_per_dim", "log_weights"):
            a, b = getattr(general, name), getattr(fast, name)
            assert (a is None) == (b is None), name
            if a is not None:
                torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9, msg=name)
        for a, b in zip(grads_general, grads_fast):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("model", ["single group", "stacked"])
def test_the_views_and_monitors_of_a_float64_run(tmp_path: Path, model: str) -> None:
    """Callbacks feed the model their own float32 batches and prior draws: under "64-true" they must still run."""
    torch.manual_seed(0)
    vae = tiny_vae() if model == "single group" else MODELS["stacked"]()
    data = torch.rand(32, *SHAPE).round()
    callbacks = [
        ReconstructionLogger(),
        PriorSampleLogger(),
        LatentTraversalLogger(),
        LatentEmbeddingLogger(),
        TensorBoardDashboard(),
        PosteriorCollapseMonitor(),
    ]
    logger = TensorBoardLogger(tmp_path, name="f64")
    trainer = Trainer(**trainer_kwargs(tmp_path, precision="64-true", max_epochs=1, logger=logger), callbacks=callbacks)
    trainer.fit(vae, datamodule=TensorDataModule(data, val=data[:16], batch_size=8))
    assert {p.dtype for p in vae.parameters()} == {torch.float64}
    assert vae.sample(3).dtype == torch.float64
    assert vae.reconstruct(data[:2]).dtype == torch.float64  # float32 data in, the model's type out
    assert any(Path(logger.log_dir).glob("events.out.tfevents.*"))
