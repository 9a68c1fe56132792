"""PosteriorCollapseMonitor per latent group: keys and values against NumPy/SciPy references computed from the step
outputs, the heat map and CSV by group, and the estimators used where a quantity has no closed form (flows)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from scipy.special import logsumexp
from scipy.stats import norm
from support.images import decode_png
from support.modules import trainer_kwargs

from lightning_vae import VAE
from lightning_vae.callbacks import PosteriorCollapseMonitor
from lightning_vae.callbacks.collapse_stats import GroupStatistics, read_groups
from lightning_vae.data import TensorDataModule
from lightning_vae.distributions import DiagonalGaussian
from lightning_vae.distributions.flows import FlowPosterior
from lightning_vae.metrics import PosteriorMeanVariance
from lightning_vae.models import FlowVAEModel, StackedVAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder

N_VAL, BATCH = 40, 16  # batches of 16, 16 and 8


class Recorder(Callback):
    """Keeps every group's posterior moments, sample and KL per dimension of each validation batch (float64)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, dict[str, np.ndarray]]] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.batches = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.batches.append(
            {
                name: {
                    "mean": g["posterior"].mean.double().numpy(),
                    "std": g["posterior"].stddev.double().numpy(),
                    "z": g["z"].double().numpy(),
                    "kl": g["kl_per_dim"].double().numpy(),
                }
                for name, g in outputs["groups"].items()
            }
        )


def _data() -> TensorDataModule:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(N_VAL, 1, 4, 4, generator=generator).round()
    return TensorDataModule(images, val=images, batch_size=BATCH, shuffle=False)


def _validate(tmp_path: Path, vae: VAE, callbacks: list, **kwargs) -> dict[str, float]:
    seed_everything(5)  # the same posterior samples in every run
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_val_batches=None, callbacks=callbacks, **kwargs))
    return trainer.validate(vae, datamodule=_data(), verbose=False)[0]


def _stacked() -> VAE:
    seed_everything(0)
    return VAE(model=StackedVAEModel((1, 4, 4), latent_sizes=(4, 2), hidden_sizes=((8,), (8,))))


def _reference_mi(batch: dict[str, np.ndarray]) -> float:
    """He et al. (2019) on one batch in float64: E[log q(z_i|x_i)] - E[log (1/B) sum_j q(z_i|x_j)]."""
    z, mean, std = batch["z"], batch["mean"], batch["std"]
    pairs = norm.logpdf(z[:, None, :], mean[None, :, :], std[None, :, :]).sum(-1)  # [i, j] = log q(z_i | x_j)
    return float(np.mean(np.diag(pairs)) - np.mean(logsumexp(pairs, axis=1) - np.log(len(z))))


def test_per_group_keys_match_references_from_the_step_outputs(tmp_path: Path) -> None:
    vae, recorder = _stacked(), Recorder()
    _validate(tmp_path, vae, [recorder])

    def means(name: str) -> np.ndarray:
        return np.concatenate([b[name]["mean"] for b in recorder.batches])

    variances = {name: np.var(means(name), axis=0, ddof=1) for name in ("z2", "z1")}
    kls = {name: sum(b[name]["kl"] * len(b[name]["z"]) for b in recorder.batches) / N_VAL for name in ("z2", "z1")}
    # Thresholds half way between sorted values: some dimensions of each kind in the run below.
    every_var, every_kl = np.sort(np.concatenate(list(variances.values()))), np.sort(np.concatenate(list(kls.values())))
    activity, kl_threshold = float(every_var[2:4].mean()), float(every_kl[2:4].mean())

    monitor = PosteriorCollapseMonitor(activity_threshold=activity, kl_threshold=kl_threshold, log_images=False)
    metrics = _validate(tmp_path, vae, [recorder, monitor])
    for name in ("z2", "z1"):
        np.testing.assert_allclose(np.var(means(name), axis=0, ddof=1), variances[name])  # the same samples again
        active, collapsed = int((variances[name] > activity).sum()), int((kls[name] < kl_threshold).sum())
        mi = sum(_reference_mi(b[name]) * len(b[name]["z"]) for b in recorder.batches) / N_VAL
        assert metrics[f"collapse/{name}/active_units"] == active
        assert metrics[f"collapse/{name}/collapsed_dims"] == collapsed
        assert metrics[f"collapse/{name}/mutual_info"] == pytest.approx(mi, rel=1e-5, abs=1e-6)
    for key in ("active_units", "collapsed_dims", "mutual_info"):
        total = metrics[f"collapse/z2/{key}"] + metrics[f"collapse/z1/{key}"]
        assert metrics[f"collapse/{key}"] == pytest.approx(total, rel=1e-6)
    assert 0 < metrics["collapse/active_units"] < 6 and 0 < metrics["collapse/collapsed_dims"] < 6
    assert monitor.last["z1/active_units"] == metrics["collapse/z1/active_units"]
    assert set(monitor.groups) == {"z2", "z1"}  # created at setup from the model's group names


def test_iw_nll_uses_the_full_joint_of_every_group(tmp_path: Path) -> None:
    vae = _stacked()
    metrics = _validate(tmp_path, vae, [PosteriorCollapseMonitor(iw_samples=200, log_images=False)])
    assert 0 < metrics["collapse/nll_iw"] <= -metrics["val/elbo"] + 0.5


def test_heat_map_and_csv_name_each_group(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="csv", version=0)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=2, logger=logger, callbacks=[PosteriorCollapseMonitor()]))
    trainer.fit(_stacked(), datamodule=_data())
    folder = Path(logger.log_dir) / "collapse"
    with open(folder / "kl_per_dim.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["stage", "step", "z2/0", "z2/1", "z1/0", "z1/1", "z1/2", "z1/3"] and len(rows) == 3
    image = decode_png(sorted((folder / "kl_per_dim_heatmap").glob("*.png"))[-1].read_bytes())
    assert image.shape[0] == 2 * 12 + 2 + 4 * 12  # two bands of 12-pixel rows, a white line between
    label_width = image.shape[1] - (2 * 12 + 2 + 12)  # two checks, the gap, the colour bar
    labels = image[:, :label_width].min(-1)
    assert labels[:24].min() < 128 and labels[26:].min() < 128  # each band's name is drawn in dark pixels
    assert np.all(image[24:26, label_width : label_width + 24] == 255)  # the white line between the groups
    caption = sorted((folder / "kl_per_dim_heatmap").glob("*.txt"))[-1].read_text()
    assert "by group, top to bottom: z2 0 to 1, z1 0 to 3" in caption


def test_a_flow_posterior_gets_active_units_from_sampled_means_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed_everything(0)
    model = FlowVAEModel(MLPEncoder((1, 4, 4), latent_dim=3), MLPDecoder(3, (1, 4, 4)), posterior="iaf")
    monitor = PosteriorCollapseMonitor(iw_samples=4, log_images=True)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        metrics = _validate(tmp_path, VAE(model=model), [monitor])
        _validate(tmp_path, VAE(model=model), [monitor])  # told once
    notes = [r.getMessage() for r in caplog.records if "group 'z'" in r.getMessage()]
    assert len(notes) == 1
    assert "active units from posterior means estimated with 16 samples per example" in notes[0]
    assert "KL per dimension skipped" in notes[0] and "mutual information skipped" in notes[0]
    assert 0 <= metrics["collapse/active_units"] <= 3 and metrics["collapse/nll_iw"] > 0
    assert "collapse/mutual_info" not in metrics and "collapse/collapsed_dims" not in metrics
    assert monitor.history == [] and not list(tmp_path.rglob("kl_per_dim*"))  # no KL per dimension to draw


def test_sampled_means_of_a_flow_without_flows_agree_with_its_closed_form_mean() -> None:
    # A flow posterior with no flows is its base Gaussian, whose mean is known: both estimators count alike, and
    # the Monte Carlo variance (1/16 here) must be subtracted for the unused dimensions to count as unused.
    spread = torch.tensor([0.0, 0.003, 0.5, 2.0]).sqrt()
    loc = torch.randn(3000, 4) * spread
    base = DiagonalGaussian(loc, torch.zeros(3000, 4))
    exact, sampled = (GroupStatistics("z", True, 0.01, 16) for _ in range(2))
    exact.update({"posterior": base, "z": base.sample()})
    sampled.update({"posterior": FlowPosterior(base, []), "z": base.sample()})
    assert exact.estimators["active_units"] == "posterior mean"
    assert sampled.estimators["active_units"] == "sampled posterior means"
    assert int(exact.active_units.compute()) == int(sampled.active_units.compute()) == 2
    variances = PosteriorMeanVariance.compute(sampled.active_units)  # the variances behind the count
    np.testing.assert_allclose(variances.numpy(), (spread**2).numpy(), rtol=0.1, atol=0.005)


def test_a_group_without_a_posterior_counts_from_its_samples_and_outputs_are_checked() -> None:
    stats = GroupStatistics("z1", False, 0.01, 4)
    stats.update({"posterior": None, "z": torch.randn(1, 8, 3), "kl_per_dim": None})
    assert stats.estimators == {"active_units": "samples z", "kl_per_dim": None, "mutual_info": None}
    assert "upper bound" in stats.notes[0] and stats.dim == 3
    with pytest.raises(TypeError, match="'posterior'.*'z'.*, got"):
        read_groups({"groups": {"z1": {"posterior": None}}}, "validation", "z")
    with pytest.raises(TypeError, match="'groups' of those per latent group, got Tensor"):
        read_groups(torch.zeros(()), "test", "z")
    assert list(read_groups({"posterior": DiagonalGaussian(torch.zeros(2, 1), torch.zeros(2, 1))}, "test", "top")) == [
        "top"
    ]


def test_the_collapse_warning_gives_each_groups_active_units(tmp_path: Path) -> None:
    monitor = PosteriorCollapseMonitor(activity_threshold=1e6, patience=1, log_images=False)  # nothing is active
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with pytest.warns(UserWarning, match="Posterior collapse") as record:
        trainer.fit(_stacked(), datamodule=_data())
    (message,) = [str(w.message) for w in record if "Posterior collapse" in str(w.message)]
    assert "Last check: 0/6 active units (z2 0/2, z1 0/4; posterior-mean variance > 1e+06" in message
