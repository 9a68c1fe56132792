"""The metrics that sample from a ground-truth source (functional/interventional.py) equal disentanglement_lib's
on identical inputs, and run offline on the shapes and dSprites data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.disentanglement import (
    ReferenceData,
    ToySource,
    compute_beta_vae_sklearn,
    compute_factor_vae,
    compute_mig,
    generate_batch_factor_code,
    representation,
    toy_encode,
)
from support.dsprites import write_small_dsprites

from lightning_vae.data import DSpritesDataModule, ShapesDataModule
from lightning_vae.functional.dci import dci
from lightning_vae.functional.disentanglement import mutual_information_gap
from lightning_vae.functional.interventional import (
    beta_vae_score,
    factor_vae_score,
    posterior_means,
    sample_codes,
)
from lightning_vae.functional.sap import sap


def test_sample_codes_draws_what_generate_batch_factor_code_draws():
    source = ToySource()
    ref_codes, ref_factors = generate_batch_factor_code(
        ReferenceData(source), representation(toy_encode), 50, np.random.RandomState(0), 16
    )
    codes, factors = sample_codes(source, toy_encode, 50, np.random.RandomState(0), chunk_size=7)
    np.testing.assert_array_equal(factors, ref_factors.T)
    np.testing.assert_array_equal(codes, ref_codes.T)


def test_mig_from_a_source_equals_disentanglement_lib():
    source = ToySource()
    expected = compute_mig(ReferenceData(source), representation(toy_encode), np.random.RandomState(2), 300)
    codes, factors = sample_codes(source, toy_encode, 300, np.random.RandomState(2))
    got = mutual_information_gap(torch.from_numpy(codes), torch.from_numpy(factors), n_bins=20)
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.9])
def test_factor_vae_score_equals_disentanglement_lib(threshold):
    source = ToySource()
    expected = compute_factor_vae(
        ReferenceData(source), representation(toy_encode), np.random.RandomState(4), 16, 150, 80, 500, threshold
    )
    got = factor_vae_score(
        source, toy_encode, batch_size=16, n_train=150, n_eval=80, n_variance=500, prune_threshold=threshold, seed=4
    )
    assert got.train_accuracy == expected["train_accuracy"] and got.eval_accuracy == expected["eval_accuracy"]
    variances = np.var(
        toy_encode(source.render(source.sample_factors(500, np.random.RandomState(4)))).numpy(), 0, ddof=1
    )
    assert got.active_dims == int((np.sqrt(variances) >= threshold).sum())  # not disentanglement_lib's len(mask)
    assert 0.0 < got.eval_accuracy <= 1.0


def test_factor_vae_score_without_active_dimensions_is_zero():
    source = ToySource()
    got = factor_vae_score(source, lambda x: torch.zeros(x.shape[0], 3), n_train=5, n_eval=5, n_variance=10)
    assert got == (0.0, 0.0, 0)


def test_beta_vae_score_equals_disentanglement_lib():
    source = ToySource()
    expected = compute_beta_vae_sklearn(
        ReferenceData(source), representation(toy_encode), np.random.RandomState(6), 8, 120, 60
    )
    got = beta_vae_score(source, toy_encode, batch_size=8, n_train=120, n_eval=60, seed=6, chunk_size=50)
    assert got.train_accuracy == pytest.approx(expected["train_accuracy"], abs=0)
    assert got.eval_accuracy == pytest.approx(expected["eval_accuracy"], abs=0)


def test_a_code_that_reads_each_factor_scores_perfectly():
    source = ToySource()
    oracle = lambda x: x.reshape(-1, 3).double() + 0.0  # noqa: E731 - the factors themselves
    assert factor_vae_score(source, oracle, n_train=60, n_eval=30, n_variance=200, batch_size=16).eval_accuracy == 1.0
    assert beta_vae_score(source, oracle, n_train=60, n_eval=30, batch_size=16).eval_accuracy == 1.0


def _pixel_encoder(side: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(side * side, 6))


class _MeanModule(torch.nn.Module):
    """A module with ``encode(x)`` returning a distribution, as VAE has."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.net = _pixel_encoder(side)

    def encode(self, x):
        return torch.distributions.Normal(self.net(x), 1.0)


@pytest.mark.parametrize("data", ["shapes", "dsprites"])
def test_every_metric_runs_offline_on_the_embedded_and_dsprites_data(tmp_path: Path, data: str):
    if data == "shapes":
        source = ShapesDataModule(image_size=28)
    else:
        write_small_dsprites(tmp_path)
        source = DSpritesDataModule(str(tmp_path), val_size=0)
    side = source.render(np.zeros((1, 5), dtype=np.int64)).shape[-1]
    encode = posterior_means(_MeanModule(side))
    rs = np.random.RandomState(0)
    train, test = sample_codes(source, encode, 100, rs), sample_codes(source, encode, 50, rs)
    scores = {
        "mig": mutual_information_gap(torch.from_numpy(train[0]), torch.from_numpy(train[1])).item(),
        # gradient-boosted trees on 40 orientations cost ~20 s here: the shapes take the lasso's importances
        "dci": dci(*train, *test, importance="lasso" if data == "shapes" else "gbt").disentanglement,
        "sap": sap(*train, *test).score,
        "factor_vae": factor_vae_score(
            source, encode, n_train=40, n_eval=20, n_variance=100, batch_size=16
        ).eval_accuracy,
        "beta_vae": beta_vae_score(source, encode, n_train=40, n_eval=20, batch_size=8).eval_accuracy,
    }
    assert all(0.0 <= v <= 1.0 for v in scores.values()), scores
    again = factor_vae_score(source, encode, n_train=40, n_eval=20, n_variance=100, batch_size=16).eval_accuracy
    assert again == scores["factor_vae"]  # seeded


def test_encode_must_return_codes_per_image():
    with pytest.raises(ValueError, match=r"codes \(n, D\) for n images"):
        sample_codes(ToySource(), lambda x: x.sum(), 10, np.random.RandomState(0))
    with pytest.raises(TypeError, match="needs data with known factors"):
        factor_vae_score(object(), toy_encode)  # type: ignore[arg-type]
