"""TensorBoardDashboard: HPARAMS session and CUSTOM SCALARS layout, read back from the event file a real run writes;
and a real TensorBoard server on the logs of a short run, whose own HTTP data API lists what a person looks at (on
127.0.0.1 only, on a free port, stopped in a ``finally`` block)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from support.modules import trainer_kwargs
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from lightning_vae import VAE, viz
from lightning_vae.callbacks import (
    LatentEmbeddingLogger,
    LatentTraversalLogger,
    PosteriorCollapseMonitor,
    PriorSampleLogger,
    ReconstructionLogger,
    TensorBoardDashboard,
)
from lightning_vae.callbacks.tensorboard import DEFAULT_LAYOUT, flatten_hparams, session_end_summary
from lightning_vae.data import FACTOR_NAMES, ShapesDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder


def small_vae(**kwargs) -> VAE:
    shape = (1, 28, 28)
    return VAE(MLPEncoder(shape, latent_dim=3, hidden_sizes=(16,)), MLPDecoder(3, shape, hidden_sizes=(16,)), **kwargs)


def run(tmp_path: Path, model: VAE, dashboard: TensorBoardDashboard, **overrides) -> tuple[Trainer, list]:
    """Fit on a few shapes with Lightning's default `hp_metric` on, as LightningCLI's default logger has it."""
    logger = TensorBoardLogger(tmp_path, name="tb", version=0, default_hp_metric=True)
    kwargs = trainer_kwargs(tmp_path, logger=logger, callbacks=[dashboard], log_every_n_steps=1, **overrides)
    trainer = Trainer(**kwargs)
    data = ShapesDataModule(image_size=28, n_train=64, n_val=32, batch_size=16)
    try:
        trainer.fit(model, data)
    finally:
        logger.experiment.flush()
    (events_file,) = Path(logger.log_dir).glob("events.out.tfevents.*")
    return trainer, list(LegacyEventFileLoader(str(events_file)).Load())


def values(events: list, tag: str) -> list:
    return [v for e in events for v in e.summary.value if v.tag == tag]


def plugin_data(value) -> HParamsPluginData:
    assert value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME
    return HParamsPluginData.FromString(value.metadata.plugin_data.content)


def scalar_tags(events: list) -> set[str]:
    return {v.tag for e in events for v in e.summary.value if v.HasField("simple_value")}


def test_flatten_hparams() -> None:
    flat = flatten_hparams(
        {
            "beta": 4.0,
            "ok": True,
            "shape": (1, 2),
            "none": None,
            "enc": {"init_args": {"d": 3}},
            "t": torch.tensor(2.5),
            "_x": 1,
        }
    )
    assert flat == {"beta": 4.0, "ok": True, "shape": "(1, 2)", "none": "None", "enc/init_args/d": 3, "t": 2.5}


def test_hparams_session_holds_the_run_hyperparameters_and_no_placeholder_metric(tmp_path: Path) -> None:
    dashboard = TensorBoardDashboard(extra_hparams={"max_epochs": 2})
    trainer, events = run(tmp_path, small_vae(beta=2.5, free_bits=0.1), dashboard)
    (start,) = values(events, metadata.SESSION_START_INFO_TAG)
    hparams = plugin_data(start).session_start_info.hparams
    assert hparams["beta"].number_value == 2.5 and hparams["free_bits"].number_value == 0.1
    assert hparams["likelihood"].string_value == "bernoulli"
    assert hparams["encoder/init_args/latent_dim"].number_value == 3  # networks as their recorded arguments
    assert hparams["n_train"].number_value == 64  # the DataModule's too
    assert hparams["max_epochs"].number_value == 2
    (end,) = values(events, metadata.SESSION_END_INFO_TAG)
    assert plugin_data(end).session_end_info.status == api_pb2.Status.Value("STATUS_SUCCESS")
    # No experiment summary and no `hp_metric`: TensorBoard then lists every scalar as a metric, at its last value.
    assert not values(events, metadata.EXPERIMENT_TAG) and "hp_metric" not in scalar_tags(events)
    assert {"train/loss", "val/elbo", "val/kl", "val/recon"} <= scalar_tags(events)


def test_custom_scalars_layout_groups_the_curves_of_the_run(tmp_path: Path) -> None:
    _, events = run(tmp_path, small_vae(), TensorBoardDashboard())
    (value,) = values(events, "custom_scalars__config__")
    assert value.metadata.plugin_data.plugin_name == "custom_scalars"
    layout = layout_pb2.Layout.FromString(value.tensor.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for c in layout.category for chart in c.chart}
    assert [c.title for c in layout.category] == ["VAE"]
    assert charts == DEFAULT_LAYOUT["VAE"]
    logged = scalar_tags(events)
    for title in (
        "loss",
        "ELBO (nats per example, higher is better)",
        "reconstruction -log p(x|z) (nats, lower is better)",
        "KL(q(z|x) || p(z))",
        "beta",
        "free bits (nats)",
    ):
        matched = {t for t in logged for regex in charts[title] if re.match(regex, t)}
        assert matched, f"chart {title!r} draws no logged tag"
    assert {t for t in logged for r in charts["loss"] if re.match(r, t)} == {"train/loss", "val/loss"}
    # One sign per chart: the ELBO (negative, rising) apart from the NLL and -log p(x|z) (positive, falling).
    elbo = charts["ELBO (nats per example, higher is better)"]
    assert all("elbo" in regex for regex in elbo) and not any("nll" in regex for regex in elbo)
    assert charts["NLL -log p(x), importance weighted (nats, lower is better)"] == [r"val/nll_iw$", r"test/nll_iw$"]


class FailingVAE(VAE):
    def training_step(self, batch, batch_idx):  # type: ignore[override]
        if self.global_step == 1:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_a_failed_run_closes_its_session_as_failed(tmp_path: Path) -> None:
    shape = (1, 28, 28)
    model = FailingVAE(MLPEncoder(shape, latent_dim=3, hidden_sizes=(16,)), MLPDecoder(3, shape, hidden_sizes=(16,)))
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path, model, TensorBoardDashboard())
    (events_file,) = Path(tmp_path, "tb", "version_0").glob("events.out.tfevents.*")
    events = list(LegacyEventFileLoader(str(events_file)).Load())
    (end,) = values(events, metadata.SESSION_END_INFO_TAG)
    assert plugin_data(end).session_end_info.status == api_pb2.Status.Value("STATUS_FAILURE")


def test_switches_are_respected(tmp_path: Path) -> None:
    _, events = run(tmp_path, small_vae(), TensorBoardDashboard(layout={}, hparams=False))
    assert not values(events, "custom_scalars__config__")
    # HPARAMS left to Lightning: its experiment summary with the placeholder `hp_metric`, written once.
    assert len(values(events, metadata.SESSION_START_INFO_TAG)) == 1 and values(events, metadata.EXPERIMENT_TAG)
    assert "hp_metric" in scalar_tags(events)


def test_validation() -> None:
    expected = "Expected `layout` to be a mapping category -> chart title -> list of tag regexes"
    for layout in ({"VAE": {"loss": "train/loss"}}, {"VAE": ["train/loss"]}, ["VAE"]):  # a string, a list, a list
        with pytest.raises(TypeError, match=expected):
            TensorBoardDashboard(layout=layout)  # type: ignore[arg-type]
    assert TensorBoardDashboard(layout={}).layout == {}
    assert session_end_summary is viz.session_end_summary  # the summaries' earlier import path


# ---------------------------------------------------------------------------------------- a real TensorBoard server
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def fetch(base: str, path: str, body: dict | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    # TensorBoard refuses POSTs without this header (its XSRF guard).
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"} if body is not None else {}
    with urllib.request.urlopen(urllib.request.Request(base + path, data=data, headers=headers), timeout=30) as r:
        return json.loads(r.read().decode())


def wait_for(check, timeout: float, what: str, server: subprocess.Popen) -> Any:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"TensorBoard exited with {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            result = check()
            if result:
                return result
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError) as err:
            last = err
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard never showed {what} within {timeout}s (last error: {last})")


def short_run(root: Path) -> str:
    shape = (1, 28, 28)
    model = VAE(MLPEncoder(shape, latent_dim=4, hidden_sizes=(16,)), MLPDecoder(4, shape, hidden_sizes=(16,)), beta=2.0)
    data = ShapesDataModule(image_size=28, n_train=64, n_val=32, batch_size=16)
    callbacks = [
        ReconstructionLogger(n_images=8),
        PriorSampleLogger(n_images=16),
        LatentTraversalLogger(n_dims=2, n_steps=5),
        LatentEmbeddingLogger(n_examples=32, metadata_header=list(FACTOR_NAMES)),
        TensorBoardDashboard(),
        PosteriorCollapseMonitor(),
    ]
    logger = TensorBoardLogger(root, name="vae", version="run")
    trainer = Trainer(**trainer_kwargs(root, logger=logger, callbacks=callbacks, log_every_n_steps=1))
    trainer.fit(model, data)
    logger.experiment.flush()
    return "vae/run"


def test_tensorboard_serves_scalars_images_histograms_hparams_layout_and_projector(tmp_path: Path) -> None:
    run = short_run(tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", HOST, "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://{HOST}:{port}"
    try:
        plugins = wait_for(lambda: fetch(base, "/data/plugins_listing"), 120, "its plugin listing", server)
        for name in ("scalars", "images", "histograms", "hparams", "custom_scalars", "projector"):
            assert name in plugins, name

        scalars = wait_for(lambda: fetch(base, "/data/plugin/scalars/tags").get(run), 60, "scalars", server)
        assert {
            "train/loss",
            "train/kl",
            "train/beta",
            "val/elbo",
            "collapse/active_units",
            "collapse/mutual_info",
        } <= set(scalars)
        images = fetch(base, "/data/plugin/images/tags")[run]
        assert {"images/reconstructions", "images/samples", "images/traversals"} <= set(images)
        assert images["images/samples"]["samples"] == 1
        histograms = fetch(base, "/data/plugin/histograms/tags")[run]
        assert "collapse/kl_per_dim" in histograms

        experiment = fetch(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
        hparam_names = {h["name"] for h in experiment["hparamInfos"]}
        assert {"beta", "likelihood", "encoder/init_args/latent_dim", "n_train"} <= hparam_names
        metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"val/elbo", "val/kl", "collapse/active_units"} <= metric_tags
        groups = fetch(
            base,
            "/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN", "STATUS_RUNNING", "STATUS_FAILURE"],
                "colParams": [{"hparam": "beta"}, {"metric": {"tag": "val/elbo", "group": ""}}],
                "startIndex": 0,
                "sliceSize": 10,
            },
        )
        (session,) = [s for g in groups["sessionGroups"] for s in g["sessions"]]
        assert session["status"] == "STATUS_SUCCESS"
        final = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert final["val/elbo"] < 0  # the final ELBO of the run, in nats
        assert groups["sessionGroups"][0]["hparams"]["beta"] == 2.0

        layout = fetch(base, "/data/plugin/custom_scalars/layout")
        charts = {chart["title"] for category in layout["category"] for chart in category["chart"]}
        assert {
            "loss",
            "KL(q(z|x) || p(z))",
            "beta",
            "free bits (nats)",
            "active units",
            "mutual information I(x; z)",
        } <= charts
        assert run in fetch(base, "/data/plugin/projector/runs")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)
        if server.stderr is not None:
            server.stderr.close()
    assert server.returncode is not None


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 must not go through a proxy configured in the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", HOST)
