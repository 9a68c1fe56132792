"""MLflow for real: Lightning's MLFlowLogger against a local `mlflow server`, read back through MLflow's client.

The fixture starts `mlflow server` (sqlite backend, proxied artifacts) on a free port of 127.0.0.1 and stops it by
its process id (the group it leads) at the end. A short run logs to MLflow and TensorBoard at once; what MLflow holds
is compared with what TensorBoard got: the metrics (same steps, same values), the hyperparameters, every image view
and the KL heat map (same steps, same pixels; through MLflow's own `log_image`), the captions and the checkpoints.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from support.images import decode_png, shapes, small_vae
from support.modules import trainer_kwargs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_vae.callbacks import (
    LatentTraversalLogger,
    PosteriorCollapseMonitor,
    PriorSampleLogger,
    ReconstructionLogger,
)

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (pip install -e '.[mlflow]') is not installed")
pytest.importorskip("flask", reason="`mlflow server` needs the mlflow extra's server packages")
from mlflow.tracking import MlflowClient  # noqa: E402
from PIL import Image  # noqa: E402 - Pillow comes with the mlflow extra (MLflow's log_image needs it)

TAGS = ("images/reconstructions", "images/samples", "images/traversals", "collapse/kl_per_dim_heatmap")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [*command, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "store")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_mlflow_server_gets_what_tensorboard_gets(tracking_uri: str, tmp_path: Path) -> None:
    mlf = MLFlowLogger(experiment_name="lightning-vae", tracking_uri=tracking_uri, log_model=True)
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    callbacks = [
        ReconstructionLogger(n_images=4, nrow=2),
        PriorSampleLogger(n_images=4, nrow=2, seed=1),
        LatentTraversalLogger(n_dims=2, n_steps=3),
        PosteriorCollapseMonitor(),
        ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, monitor="val/loss"),
    ]
    trainer = Trainer(
        **trainer_kwargs(
            tmp_path,
            max_epochs=2,
            logger=[mlf, tb],
            callbacks=callbacks,
            enable_checkpointing=True,
            log_every_n_steps=1,
        )
    )
    trainer.fit(small_vae(), shapes())

    client = MlflowClient(tracking_uri)
    run = client.get_run(mlf.run_id)
    assert run.info.status == "FINISHED"
    events = EventAccumulator(tb.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()

    # Metrics: every scalar TensorBoard has, at the same steps with the same values.
    for key in ("val/loss", "val/elbo", "val/kl", "train/loss", "collapse/active_units", "collapse/mutual_info"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(mlf.run_id, key))
        board = sorted((e.step, e.value) for e in events.Scalars(key))
        assert [s for s, _ in history] == [s for s, _ in board], key
        np.testing.assert_allclose([v for _, v in history], [v for _, v in board], rtol=1e-6, err_msg=key)

    # Hyperparameters: the module's, as TensorBoard's hparams.yaml records them.
    params = run.data.params
    assert params["beta"] == "1.0" and params["likelihood"] == "bernoulli" and float(params["free_bits"]) == 0.0
    assert "encoder/init_args/latent_dim" in params or any(k.startswith("encoder") for k in params)

    # Images: each view and the heat map through MLflow's log_image, at TensorBoard's steps, with the same pixels.
    store = Path(client.download_artifacts(mlf.run_id, "images", str(tmp_path / "download")))
    for tag in TAGS:
        prefix = tag.replace("/", "~")
        files = sorted(store.glob(f"{prefix}+step+*.png"), key=lambda p: int(re.search(r"\+step\+(\d+)\+", p.name)[1]))
        steps = [int(re.search(r"\+step\+(\d+)\+", p.name)[1]) for p in files]
        board = events.Images(tag)
        assert steps == [e.step for e in board] and len(steps) == 2, tag
        mine = decode_png(board[-1].encoded_image_string)  # TensorBoard's: the suite's own PNG
        theirs = np.asarray(Image.open(files[-1]))  # MLflow's: re-encoded by Pillow (other PNG filters)
        assert np.array_equal(theirs.reshape(mine.shape), mine), tag
    # The KL of each dimension as a bar chart, and the captions (traversal rows, heat-map legend) as text artifacts.
    assert list(store.glob("collapse~kl_per_dim+step+*.png"))
    texts = {a.path for a in client.list_artifacts(mlf.run_id, "collapse/kl_per_dim_heatmap")}
    assert texts and all(p.endswith(".txt") for p in texts)
    assert client.list_artifacts(mlf.run_id, "images/traversals")

    # Checkpoints: every file ModelCheckpoint wrote (the best and the last), as artifacts of the run.
    def walk(path: str | None = None) -> list[str]:
        found = []
        for artifact in client.list_artifacts(mlf.run_id, path):
            found += walk(artifact.path) if artifact.is_dir else [artifact.path]
        return found

    uploaded = {Path(p).name for p in walk() if p.endswith(".ckpt")}
    written = {p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")}
    assert written and written == uploaded, (written, uploaded)
    shutil.rmtree(tmp_path / "download", ignore_errors=True)
