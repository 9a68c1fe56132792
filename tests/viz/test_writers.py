"""Every view reaches every logger: TensorBoard, loggers with ``log_image``, MLflow, Comet, CSV files, no logger;
TensorBoard image summaries as TensorBoard reads them."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CometLogger, CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from support.collapse import IndexedImages, ProtocolModule, binary_patterns, train_loader
from support.images import decode_png, quantize, reference_grid, shapes, small_vae
from support.modules import trainer_kwargs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from lightning_vae.callbacks import (
    LatentEmbeddingLogger,
    LatentTraversalLogger,
    PosteriorCollapseMonitor,
    PriorSampleLogger,
    ReconstructionLogger,
    TensorBoardDashboard,
)
from lightning_vae.viz import ViewWriter, bar_chart, kl_heatmap, labelled_heatmap, logger_kind

VAL_SIZES = (32, 32, 14)


# ---------------------------------------------------------------------------------------- logger stubs
class _QuietLogger(Logger):
    """A logger that takes metrics and hyperparameters and does nothing with them."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    @property
    def name(self) -> str:
        return "stub"

    @property
    def version(self) -> int:
        return 0

    @property
    def save_dir(self) -> str:
        return str(self.root)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class ImageLogger(_QuietLogger):
    """Records ``log_image`` calls, with the signature of Lightning's ``WandbLogger.log_image``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, list, int | None, dict]] = []

    def log_image(self, key: str, images: list, step: int | None = None, **kwargs: Any) -> None:
        self.calls.append((key, images, step, kwargs))

    def images(self, key: str) -> list[tuple[list, int | None, dict]]:
        return [(images, step, kwargs) for k, images, step, kwargs in self.calls if k == key]


class CaptionlessImageLogger(_QuietLogger):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.keys: list[str] = []

    def log_image(self, key: str, images: list, step: int | None = None) -> None:
        self.keys.append(key)


class BrokenImageLogger(_QuietLogger):
    def log_image(self, key: str, images: list, step: int | None = None, **kwargs: Any) -> None:
        raise ConnectionError("server unreachable")


class Recorder:
    """Stands for an MLflow client or a Comet experiment: records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


class StubMLflow(MLFlowLogger):
    def __init__(self, root: Path) -> None:  # no mlflow needed: nothing of MLFlowLogger.__init__ runs
        Logger.__init__(self)
        self.root, self.client = root, Recorder()

    experiment = property(lambda self: self.client)
    run_id = property(lambda self: "run-1")
    name = property(lambda self: "mlflow")
    version = property(lambda self: "run-1")
    save_dir = property(lambda self: str(self.root))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any) -> None:
        pass

    def finalize(self, status: str = "success") -> None:
        pass

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        pass


class StubComet(CometLogger):
    def __init__(self, root: Path) -> None:
        Logger.__init__(self)
        self.root, self.recorder, self._experiment = root, Recorder(), None

    experiment = property(lambda self: self.recorder)
    name = property(lambda self: "comet")
    version = property(lambda self: "1")
    save_dir = property(lambda self: str(self.root))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any) -> None:
        pass

    def finalize(self, status: str) -> None:
        pass


# ---------------------------------------------------------------------------------------- runs
def views() -> list:
    return [
        ReconstructionLogger(n_images=4, nrow=2),
        PriorSampleLogger(n_images=6, nrow=3, seed=2),
        LatentTraversalLogger(n_dims=2, n_steps=3, n_examples=32),
    ]


def fit_views(tmp_path: Path, logger: Any, callbacks: list | None = None, **overrides) -> tuple[Trainer, Any, Any]:
    model, data = small_vae(), shapes()
    kwargs = trainer_kwargs(tmp_path, logger=logger, callbacks=views() if callbacks is None else callbacks)
    kwargs.update(overrides)
    trainer = Trainer(**kwargs)
    trainer.fit(model, data)
    return trainer, model.eval(), data


def fit_monitor(tmp_path: Path, logger: Any, max_epochs: int = 2) -> tuple[Trainer, PosteriorCollapseMonitor]:
    monitor = PosteriorCollapseMonitor()
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=max_epochs, logger=logger, callbacks=[monitor]))
    trainer.fit(ProtocolModule(n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES), train_loader())
    return trainer, monitor


def expected_recon(model: Any, data: Any) -> np.ndarray:
    x = data.val_set.images[:4]
    with torch.no_grad():
        recon = model.reconstruct(x)
    grid = reference_grid(torch.cat([x[:2], recon[:2], x[2:], recon[2:]]).numpy(), 2, 2, 1.0)
    return quantize(torch.from_numpy(grid))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


# ---------------------------------------------------------------------------------------- CSV and no logger
def test_csv_logger_gets_png_files_named_by_tag_and_step(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logger = CSVLogger(tmp_path, name="csv", version=0)
    with caplog.at_level("INFO", logger="lightning.pytorch.utilities.rank_zero"):
        trainer, model, data = fit_views(tmp_path, logger)
    folder = Path(logger.log_dir)
    notes = [r.getMessage() for r in caplog.records if "files under" in r.getMessage()]
    assert notes == [
        f"ReconstructionLogger: CSVLogger does not show images; the views go to PNG and CSV files under {folder}"
    ]
    # the steps of the validation scalars (Lightning writes them one step before trainer.global_step)
    steps = [trainer.num_training_batches - 1, 2 * trainer.num_training_batches - 1]
    for tag in ("images/reconstructions", "images/samples", "images/traversals"):
        assert sorted(p.name for p in (folder / tag).glob("*.png")) == [f"step_{s:06d}.png" for s in steps], tag
    last = f"step_{steps[-1]:06d}"
    assert close(
        decode_png((folder / "images/reconstructions" / f"{last}.png").read_bytes()), expected_recon(model, data)
    )
    torch.manual_seed(2)  # the samples' fixed noise, drawn with the global generator
    samples = quantize(torch.from_numpy(reference_grid(model.sample(6).numpy(), 3, 2, 1.0)))
    assert close(decode_png((folder / "images/samples" / f"{last}.png").read_bytes()), samples)
    note = (folder / "images/traversals" / f"{last}.txt").read_text()
    assert note.startswith("rows, top to bottom: z") and note.count("(var ") == 2
    assert (folder / "metrics.csv").is_file()  # the logger's own output is untouched


def test_collapse_views_with_csv_logger_write_the_heat_map_and_a_csv_of_kl_per_dimension(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="csv", version=0)
    trainer, monitor = fit_monitor(tmp_path, logger, max_epochs=3)
    folder = Path(logger.log_dir) / "collapse"
    with open(folder / "kl_per_dim.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["stage", "step", "0", "1", "2"]
    assert [r[:2] for r in rows[1:]] == [["validate", str(s)] for s in monitor.history_steps]
    np.testing.assert_allclose(np.array([r[2:] for r in rows[1:]], float), np.array(monitor.history), rtol=1e-5)
    heatmaps = sorted((folder / "kl_per_dim_heatmap").glob("*.png"))
    assert [p.name for p in heatmaps] == [f"step_{s:06d}.png" for s in monitor.history_steps]
    image, vmax = kl_heatmap(torch.tensor(monitor.history))
    # The file is read alone: the map with its axes and scale written on it, large enough to read.
    labelled = labelled_heatmap(image, 3, monitor.history_steps, vmax)
    png = decode_png(heatmaps[-1].read_bytes())
    assert close(png, quantize(labelled)) and png.shape[0] >= 192
    scale, top, left = math.ceil(192 / image.shape[1]), 28, 44  # enlarged by a whole factor, inside the margins
    inner = labelled[:, top : top + image.shape[1] * scale : scale, left : left + image.shape[2] * scale : scale]
    assert torch.equal(inner, image)
    assert "colour bar" in heatmaps[-1].with_suffix(".txt").read_text()

    test_data = DataLoader(IndexedImages(binary_patterns(sum(VAL_SIZES))), batch_size=32)
    trainer.test(ProtocolModule(n_data=sum(VAL_SIZES), val_batch_sizes=VAL_SIZES), test_data, verbose=False)
    with open(folder / "kl_per_dim.csv") as f:
        assert list(csv.reader(f))[-1][0] == "test"


def test_without_any_logger_files_go_to_default_root_dir(tmp_path: Path) -> None:
    fit_views(tmp_path, False, callbacks=[ReconstructionLogger(n_images=4, nrow=2)])
    assert len(list((tmp_path / "images" / "reconstructions").glob("step_*.png"))) == 2


def test_fast_dev_run_writes_nothing(tmp_path: Path) -> None:
    for logger in (False, CSVLogger(tmp_path, name="csv")):
        monitor = PosteriorCollapseMonitor()
        fit_views(tmp_path, logger, callbacks=[*views(), monitor], fast_dev_run=True)
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("kl_per_dim.csv"))


def test_tensorboard_and_csv_each_get_the_views(tmp_path: Path) -> None:
    tb, csv_logger = TensorBoardLogger(tmp_path, name="tb", version=0), CSVLogger(tmp_path, name="csv", version=0)
    trainer, model, data = fit_views(tmp_path, [tb, csv_logger], callbacks=[ReconstructionLogger(n_images=4, nrow=2)])
    events = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    events.Reload()
    image = decode_png(events.Images("images/reconstructions")[-1].encoded_image_string)
    png = sorted((Path(csv_logger.log_dir) / "images" / "reconstructions").glob("*.png"))[-1]
    assert close(image, expected_recon(model, data)) and np.array_equal(image, decode_png(png.read_bytes()))


# ---------------------------------------------------------------------------------------- loggers that take images
def test_a_logger_with_log_image_gets_grids_captions_and_kl_bar_charts(tmp_path: Path) -> None:
    logger = ImageLogger(tmp_path)
    trainer, model, data = fit_views(tmp_path, logger)
    steps = [trainer.num_training_batches - 1, 2 * trainer.num_training_batches - 1]  # those of the val scalars
    for key in ("images/reconstructions", "images/samples", "images/traversals"):
        calls = logger.images(key)
        assert [step for _, step, _ in calls] == steps and all(len(images) == 1 for images, _, _ in calls)
    (images, _, kwargs) = logger.images("images/reconstructions")[-1]
    assert images[0].dtype == np.uint8 and images[0].ndim == 2  # grey images as (H, W)
    assert close(images[0][:, :, None], expected_recon(model, data)) and "caption" not in kwargs
    (_, _, kwargs) = logger.images("images/traversals")[-1]
    assert kwargs["caption"][0].startswith("rows, top to bottom: z")
    assert not list(tmp_path.rglob("*.png"))  # nothing falls back to files

    logger = ImageLogger(tmp_path / "monitor")
    _, monitor = fit_monitor(tmp_path, logger)
    (images, step, kwargs) = logger.images("collapse/kl_per_dim")[-1]
    chart, vmax = bar_chart(torch.tensor(monitor.history[-1]))
    assert step == monitor.history_steps[-1] and close(images[0], quantize(chart))
    assert f"a full bar is {vmax:.4g}" in kwargs["caption"][0]
    (images, _, kwargs) = logger.images("collapse/kl_per_dim_heatmap")[-1]
    assert close(images[0], quantize(kl_heatmap(torch.tensor(monitor.history))[0]))
    assert "Rows: latent dimensions" in kwargs["caption"][0]


def test_a_log_image_without_captions_is_told_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logger = CaptionlessImageLogger(tmp_path)
    with caplog.at_level("INFO", logger="lightning.pytorch.utilities.rank_zero"):
        fit_views(tmp_path, logger, callbacks=[LatentTraversalLogger(n_dims=2, n_steps=3, n_examples=32)])
    assert logger.keys == ["images/traversals"] * 2
    notes = [r.getMessage() for r in caplog.records if "takes no caption" in r.getMessage()]
    assert len(notes) == 1 and "images/traversals_dims" in notes[0]


def test_a_failing_logger_is_reported_once_and_the_views_go_to_its_folder(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit_views(tmp_path, BrokenImageLogger(tmp_path / "broken"), callbacks=[ReconstructionLogger(n_images=4)])
    messages = [str(w.message) for w in record if "did not take" in str(w.message)]
    assert len(messages) == 1 and "ConnectionError: server unreachable" in messages[0]
    assert len(list((tmp_path / "broken" / "images" / "reconstructions").glob("*.png"))) == 2


def test_mlflow_and_comet_get_images_through_their_clients(tmp_path: Path) -> None:
    mlflow, comet = StubMLflow(tmp_path), StubComet(tmp_path)
    assert (logger_kind(mlflow), logger_kind(comet)) == ("mlflow", "comet")
    trainer, model, data = fit_views(tmp_path, [mlflow, comet])
    step = 2 * trainer.num_training_batches - 1  # the step of the last validation's scalars
    images = [c for c in mlflow.client.calls if c[0] == "log_image"]
    assert len(images) == 6
    name, args, kwargs = images[-3]
    assert args[0] == "run-1" and kwargs == {"key": "images/reconstructions", "step": step}
    assert close(args[1][:, :, None], expected_recon(model, data))
    texts = [c for c in mlflow.client.calls if c[0] == "log_text"]
    assert [c[1][2] for c in texts][-1] == f"images/traversals/step_{step:06d}.txt"
    comet_images = [c for c in comet.recorder.calls if c[0] == "log_image"]
    assert [c[2] for c in comet_images[-3:]] == [
        {"name": f"images/{view}", "step": step} for view in ("reconstructions", "samples", "traversals")
    ]
    assert not list(tmp_path.rglob("*.png"))


# ---------------------------------------------------------------------------------------- the other views
def test_projector_files_go_to_the_csv_folder(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="csv", version=0)
    fit_views(tmp_path, logger, callbacks=[LatentEmbeddingLogger(n_examples=16)])
    folder = Path(logger.log_dir)
    assert (folder / "projector_config.pbtxt").is_file()
    (tensors,) = folder.glob("*/latent_posterior_mean/tensors.tsv")
    assert np.loadtxt(tensors, delimiter="\t").shape == (16, 4)


def test_dashboard_without_tensorboard_says_it_writes_nothing(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="TensorBoardDashboard fills TensorBoard's HPARAMS .* nothing written"):
        fit_views(tmp_path, CSVLogger(tmp_path, name="csv"), callbacks=[TensorBoardDashboard()])


# ---------------------------------------------------------------------------------------- pieces
def test_view_writer_writes_nan_images_and_values(tmp_path: Path) -> None:
    trainer = Trainer(logger=CSVLogger(tmp_path, name="csv", version=0), default_root_dir=tmp_path)
    out = ViewWriter("test")
    image = torch.tensor([[[0.0, float("nan")], [1.0, 0.5]]])
    (path,) = out.image(trainer, "x/y", image, step=7)
    assert decode_png(Path(path).read_bytes())[..., 0].tolist() == [[0, 0], [255, 128]]
    (path,) = out.values(trainer, "x/kl", torch.tensor([0.5, float("nan")]), step=7)
    assert Path(path).read_text().splitlines() == ["stage,step,0,1", "validate,7,0.5,nan"]
    chart, vmax = bar_chart(torch.tensor([0.5, float("nan"), float("inf")]))
    assert vmax == 0.5 and chart.shape == (3, 64, 32)
    (path,) = out.values(trainer, "x/kl2", torch.tensor([0.5, 1.0, 2.0]), step=8, names=["z2/0", "z1/0", "z1/1"])
    assert Path(path).read_text().splitlines() == ["stage,step,z2/0,z1/0,z1/1", "validate,8,0.5,1,2"]
    with pytest.raises(ValueError, match=r"Expected one name per value \(3\), got 1: \['z'\]"):
        out.values(trainer, "x/kl3", torch.tensor([0.5, 1.0, 2.0]), step=8, names=["z"])
