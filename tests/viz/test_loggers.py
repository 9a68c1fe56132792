"""How views choose where to go (viz/loggers.py): the kind of each logger, the folder its files go to, tag paths that
stay inside it, keyword checks of a logger's method, and arrays as image loggers take them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger

from lightning_vae.viz import logger_kind, tag_path
from lightning_vae.viz.loggers import accepts, for_loggers, logger_folder


class _Plain(Logger):
    """A logger with metrics only: no log_image, no folder of its own."""

    name = property(lambda self: "plain")
    version = property(lambda self: 0)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class _WithImages(_Plain):
    """A logger with ``log_image`` (as WandbLogger and NeptuneLogger have)."""

    def log_image(self, key: str, images: list, step: int | None = None) -> None:
        pass


class _Saved(_Plain):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    save_dir = property(lambda self: self.folder)


class _BrokenFolder(_Plain):
    @property
    def log_dir(self) -> str:
        raise RuntimeError("not set up yet")

    save_dir = property(lambda self: "")


def test_each_kind_of_logger(tmp_path: Path) -> None:
    assert logger_kind(TensorBoardLogger(tmp_path)) == "tensorboard"
    assert logger_kind(CSVLogger(tmp_path)) == "files"
    assert logger_kind(DummyLogger()) == "off"  # fast_dev_run
    assert logger_kind(_WithImages()) == "log_image"
    assert logger_kind(_Plain()) == "files"
    assert logger_kind(None) == "files"


def test_the_folder_is_the_log_dir_else_the_save_dir_else_the_root(tmp_path: Path) -> None:
    trainer = Trainer(default_root_dir=tmp_path / "root", logger=False)
    csv = CSVLogger(tmp_path / "csv", name="run", version=3)
    assert Path(logger_folder(trainer, csv)) == tmp_path / "csv" / "run" / "version_3"
    assert logger_folder(trainer, _Saved(tmp_path / "saved")) == str(tmp_path / "saved")  # no log_dir
    assert logger_folder(trainer, _BrokenFolder()) == str(tmp_path / "root")  # a failing property, an empty one
    assert logger_folder(trainer, _Plain()) == str(tmp_path / "root")
    assert logger_folder(trainer) == str(tmp_path / "root")


def test_tag_paths_stay_inside_the_folder() -> None:
    assert tag_path("images/samples").as_posix() == "images/samples"
    assert tag_path("../../etc/passwd").as_posix() == "_/_/etc/passwd"
    assert tag_path("/abs//a b:c").as_posix() == "abs/a_b_c"
    assert tag_path("").as_posix() == "_"
    assert tag_path("images/recon structions").as_posix() == "images/recon_structions"
    assert tag_path("a/./b/../c").as_posix() == "a/_/b/_/c"


def test_accepts_reads_a_signature() -> None:
    def strict(key: str, step: int) -> None: ...

    def loose(key: str, **kwargs: Any) -> None: ...

    assert accepts(strict, "step") and not accepts(strict, "caption")
    assert accepts(loose, "caption")  # any keyword
    assert not accepts(object(), "step")  # not callable: no signature
    assert accepts(_WithImages().log_image, "step")


def test_arrays_for_loggers_drop_a_single_channel() -> None:
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    colour = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(for_loggers(grey), grey[:, :, 0])
    assert for_loggers(colour) is colour
