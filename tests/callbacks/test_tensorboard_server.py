"""A real TensorBoard server on the logs of a short run: its own HTTP data API lists what a person looks at.

The server runs on 127.0.0.1 only, on a free port, and is stopped in a ``finally`` block.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from support.modules import trainer_kwargs

from lightning_vae import VAE
from lightning_vae.callbacks import (
    LatentEmbeddingLogger,
    LatentTraversalLogger,
    PosteriorCollapseMonitor,
    PriorSampleLogger,
    ReconstructionLogger,
    TensorBoardDashboard,
)
from lightning_vae.data import FACTOR_NAMES, ShapesDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder

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
