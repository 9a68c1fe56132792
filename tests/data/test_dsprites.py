"""DSpritesDataModule on a small file of the official layout: images and factors as the file holds them, sampled
and rendered as disentanglement_lib's ``DSprites`` does, and an error naming the file when it is absent or
malformed (a pickled array is refused, never unpickled)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.dsprites import SMALL_SIZES, small_grid, small_images, write_small_dsprites

from lightning_vae.data import DSpritesDataModule, GroundTruthData, MissingDataError, load_dsprites
from lightning_vae.data.dsprites import FILE_NAME


def _file_arrays():
    classes = small_grid()
    return classes, small_images(classes, SMALL_SIZES)


def test_reads_images_and_factors_as_the_file_holds_them(tmp_path: Path) -> None:
    write_small_dsprites(tmp_path)
    classes, imgs = _file_arrays()
    dm = DSpritesDataModule(str(tmp_path), batch_size=16, val_size=24, seed=3)
    dm.setup("fit")
    assert dm.factor_sizes == SMALL_SIZES[1:] and dm.data_shape == (1, 64, 64)
    assert dm.data is not None and dm.data.packed.nbytes == 144 * 64 * 64 // 8  # one bit per pixel
    train, val = dm.train_set.indices, dm.val_set.indices
    assert len(val) == 24 and len(train) == 120 and set(train) | set(val) == set(range(144))
    seen = 0
    for x, factors in dm.train_dataloader():
        full = np.concatenate([np.zeros((len(factors), 1), int), factors.numpy()], 1)
        rows = np.ravel_multi_index(full.T, SMALL_SIZES)
        np.testing.assert_array_equal(x[:, 0].numpy(), imgs[rows].astype(np.float32))
        np.testing.assert_array_equal(factors.numpy(), classes[rows, 1:])
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 64, 64)
        seen += len(factors)
    assert seen == 120
    x0, f0 = dm.val_set[0]  # item access and the batched fetch agree
    np.testing.assert_array_equal(x0[0].numpy(), imgs[val[0]].astype(np.float32))
    np.testing.assert_array_equal(f0.numpy(), classes[val[0], 1:])


def _dsprites_reference(imgs, sizes, random_state, n):
    """disentanglement_lib ``DSprites`` (latent_factor_indices 1..5): ``sample_factors`` then
    ``sample_observations_from_factors`` (``sample_all_factors`` draws the colour with randint(1))."""
    factor_sizes = np.array(sizes, dtype=np.int64)
    factor_bases = np.prod(factor_sizes) / np.cumprod(factor_sizes)
    latent = [1, 2, 3, 4, 5]
    factors = np.zeros((n, 5), dtype=np.int64)
    for pos, i in enumerate(latent):
        factors[:, pos] = random_state.randint(factor_sizes[i], size=n)
    all_factors = np.zeros((n, 6), dtype=np.int64)
    all_factors[:, latent] = factors
    all_factors[:, 0] = random_state.randint(factor_sizes[0], size=n)
    indices = np.array(np.dot(all_factors, factor_bases), dtype=np.int64)
    return factors, np.expand_dims(imgs[indices].astype(np.float32), axis=3)


def test_samples_and_renders_as_disentanglement_lib(tmp_path: Path) -> None:
    write_small_dsprites(tmp_path)
    _, imgs = _file_arrays()
    dm = DSpritesDataModule(str(tmp_path), val_size=0)
    assert isinstance(dm, GroundTruthData) and dm.factor_names[0] == "shape"
    mine, theirs = np.random.RandomState(7), np.random.RandomState(7)
    for n in (5, 64, 1):
        factors = dm.sample_factors(n, mine)
        ref_factors, ref_images = _dsprites_reference(imgs, SMALL_SIZES, theirs, n)
        np.testing.assert_array_equal(factors, ref_factors)
        np.testing.assert_array_equal(dm.render(factors)[:, 0].numpy(), ref_images[..., 0])
    assert mine.randint(10**9) == theirs.randint(10**9)  # the same draws were taken
    with pytest.raises(ValueError, match=r"factor values in \[0, size\)"):
        dm.render(np.array([[3, 0, 0, 0, 0]]))


def test_absent_or_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=FILE_NAME):
        DSpritesDataModule(str(tmp_path)).setup()
    path = tmp_path / FILE_NAME
    cases = {
        "not an npz": lambda: path.write_bytes(b"not a zip archive at all"),
        "no imgs": lambda: write_small_dsprites(tmp_path, imgs=None),
        "not the grid": lambda: write_small_dsprites(tmp_path, latents_classes=small_grid()[::-1].copy()),
        "not binary": lambda: write_small_dsprites(tmp_path, imgs=small_images(small_grid(), SMALL_SIZES) * 2),
        "fewer images": lambda: write_small_dsprites(tmp_path, imgs=small_images(small_grid(), SMALL_SIZES)[:100]),
        "not square": lambda: write_small_dsprites(tmp_path, imgs=np.zeros((144, 64, 32), np.uint8)),
        "float classes": lambda: write_small_dsprites(tmp_path, latents_classes=small_grid().astype(float)),
    }
    for name, write in cases.items():
        write()
        with pytest.raises(ValueError) as info:
            load_dsprites(tmp_path)
        assert f"{FILE_NAME}' is not a dSprites file" in str(info.value), name
        path.unlink()


class _Payload:
    """Unpickling it leaves a file behind: a pickled array must not be loaded."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_array_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    payload = _Payload()
    payload.marker = tmp_path / "unpickled"
    write_small_dsprites(tmp_path / "data", latents_classes=np.array([payload], dtype=object))
    with pytest.raises(ValueError, match="cannot be read without pickle"):
        load_dsprites(tmp_path / "data")
    assert not payload.marker.exists()
    write_small_dsprites(tmp_path / "ok", metadata=np.array([payload], dtype=object))  # the official pickled key
    assert len(load_dsprites(tmp_path / "ok")) == 144  # read around it
    assert not payload.marker.exists()
    with zipfile.ZipFile(tmp_path / "ok" / FILE_NAME) as archive:
        assert "metadata.npy" in archive.namelist()


def test_arguments_are_checked(tmp_path: Path) -> None:
    write_small_dsprites(tmp_path)
    with pytest.raises(ValueError, match="Expected `val_size` to be below the 144 images, got 144"):
        DSpritesDataModule(str(tmp_path), val_size=144).setup()
    with pytest.raises(TypeError, match="Expected `data_dir` to be a folder path"):
        DSpritesDataModule(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `val_size` to be an int >= 0"):
        DSpritesDataModule(str(tmp_path), val_size=-1)
