"""The ground-truth interface (data/ground_truth.py): factors drawn as disentanglement_lib draws them, the shapes data
keeping it, checks of factors and of sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_vae.data import FACTOR_SIZES, GroundTruthData, ShapesDataModule, render_shapes
from lightning_vae.data.ground_truth import check_factors, require_ground_truth, sample, sample_uniform_factors


def _split_discrete_state_space(factor_sizes, latent_factor_indices, num, random_state):
    """disentanglement_lib ``SplitDiscreteStateSpace.sample_latent_factors``."""
    factors = np.zeros(shape=(num, len(latent_factor_indices)), dtype=np.int64)
    for pos, i in enumerate(latent_factor_indices):
        factors[:, pos] = random_state.randint(factor_sizes[i], size=num)
    return factors


def test_uniform_factors_are_disentanglement_lib_s_draws():
    mine, theirs = np.random.RandomState(11), np.random.RandomState(11)
    for n in (1, 16, 100):
        np.testing.assert_array_equal(
            sample_uniform_factors(FACTOR_SIZES, n, mine),
            _split_discrete_state_space(FACTOR_SIZES, range(5), n, theirs),
        )


def test_the_shapes_data_is_a_ground_truth_source():
    dm = ShapesDataModule(image_size=28, n_train=8, n_val=8)
    assert isinstance(dm, GroundTruthData)
    assert dm.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y") and dm.factor_sizes == FACTOR_SIZES
    factors, images = sample(dm, 6, np.random.RandomState(0))
    assert factors.dtype == np.int64 and factors.shape == (6, 5)
    assert images.dtype == torch.float32 and images.shape == (6, 1, 28, 28)
    torch.testing.assert_close(images, render_shapes(torch.from_numpy(factors), 28).float())
    dm.setup("fit")  # the data sets' images are the rendered ones
    x, f = dm.train_set[3]
    torch.testing.assert_close(dm.render(f.unsqueeze(0))[0], x)


def test_factors_and_sources_are_checked():
    with pytest.raises(ValueError, match=r"integer factors of shape \(n, 2\)"):
        check_factors(np.zeros((3, 3), dtype=np.int64), (2, 2))
    with pytest.raises(ValueError, match=r"integer factors"):
        check_factors(np.zeros((3, 2)), (2, 2))
    with pytest.raises(ValueError, match=r"in \[0, size\)"):
        check_factors(np.array([[0, 2]]), (2, 2))
    assert check_factors(torch.tensor([[1, 1]]), (2, 2)).dtype == np.int64
    with pytest.raises(TypeError, match="Expected `random_state` to be a numpy.random.RandomState, got 0"):
        sample_uniform_factors((2,), 3, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="FactorVAEScore needs data with known factors .* lacks render"):

        class NoRender:
            factor_names, factor_sizes = ("a",), (2,)

            def sample_factors(self, n, random_state):
                return np.zeros((n, 1), dtype=np.int64)

        require_ground_truth(NoRender(), "FactorVAEScore")
