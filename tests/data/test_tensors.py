"""TensorDataModule from tensors, arrays and .npy/.npz files; arguments checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_vae.data import (
    MissingDataError,
    TensorDataModule,
    load_array,
)


def test_tensor_datamodule_from_tensors_and_files(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((40, 3, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    np.savez(tmp_path / "d.npz", x=data, y=np.zeros(40))
    torch.testing.assert_close(load_array(str(tmp_path / "x.npy")), torch.from_numpy(data))
    torch.testing.assert_close(load_array(str(tmp_path / "d.npz")), torch.from_numpy(data))
    with pytest.raises(ValueError, match=r"`key` to name one of the arrays \['a', 'b'\]"):
        np.savez(tmp_path / "e.npz", a=data, b=data)
        load_array(str(tmp_path / "e.npz"))
    with pytest.raises(MissingDataError, match="nothing.npy"):
        load_array(str(tmp_path / "nothing.npy"))
    dm = TensorDataModule(str(tmp_path / "x.npy"), val_fraction=0.25, batch_size=8)
    dm.setup()
    assert len(dm.train_set) == 30 and len(dm.val_set) == 10 and dm.data_shape == (3, 2)
    (x,) = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 2)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (
            lambda: TensorDataModule(torch.zeros(4, 2), val_fraction=1.0),
            ValueError,
            r"`val_fraction` to be .*< 1, got 1.0",
        ),
        (lambda: TensorDataModule(torch.zeros(4, 2), batch_size=0), ValueError, r"`batch_size` to be an int >= 1"),
        (lambda: TensorDataModule([[0.0]]), TypeError, r"`train` to be a tensor, an array or a .npy/.npz path"),
        (lambda: TensorDataModule(torch.zeros(4, 2), shuffle=1), TypeError, r"`shuffle` to be a bool, got 1"),
    ],
)
def test_datamodule_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()
