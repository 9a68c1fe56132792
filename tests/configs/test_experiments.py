"""Hydra experiments and LightningCLI YAMLs describe the same runs; each experiment runs; checkpoints reload alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("hydra", reason="needs hydra-core (a GPU check may run without it)")

from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch import Callback, LightningDataModule  # noqa: E402
from support.hydra import (  # noqa: E402
    SMALL_SHAPES,
    compose_cfg,
    data_view,
    lightning_cli_configs,
    model_view,
    needs_mnist,
    options,
    plain,
    small_mnist,
    trainer_view,
    training_callbacks,
)
from support.paths import ROOT, require_mnist  # noqa: E402

from lightning_vae import VAE  # noqa: E402
from lightning_vae.cli import VAECLI  # noqa: E402
from lightning_vae.cli.hydra import instantiate_group, train  # noqa: E402

EXPERIMENTS = options("experiment")
CLI_CONFIGS = lightning_cli_configs()


def _skip_without_mnist(cfg) -> None:
    if needs_mnist(cfg):
        require_mnist("this experiment")


def test_every_experiment_has_a_lightning_cli_twin_and_back() -> None:
    assert {"shapes", "shapes_beta_vae", "mnist_mlp", "mnist_conv", "mnist_collapse"} <= set(EXPERIMENTS)
    assert sorted(CLI_CONFIGS) == EXPERIMENTS, "each configs/hydra/experiment/<name>.yaml needs configs/cli/<name>.yaml"


@pytest.mark.parametrize("name", sorted(set(EXPERIMENTS) & set(CLI_CONFIGS)))
def test_hydra_and_lightning_cli_build_the_same_experiment(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    cli = VAECLI(
        VAE,
        LightningDataModule,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(CLI_CONFIGS[name]), f"--trainer.default_root_dir={tmp_path / 'cli'}"],
    )
    cfg = compose_cfg([f"experiment={name}"], tmp_path / "hydra")
    torch.manual_seed(0)
    model = instantiate(cfg.model)

    assert model_view(model) == model_view(cli.model)
    assert data_view(instantiate(cfg.data)) == data_view(cli.datamodule)
    assert trainer_view(instantiate(cfg.trainer)) == trainer_view(cli.trainer)
    assert cfg.seed == cli.config.seed_everything

    hydra_callbacks = [
        (c["_target_"], {k: v for k, v in c.items() if k != "_target_"})
        for c in plain(cfg.callbacks).values()
        if c is not None  # an entry an experiment switched off
    ]
    cli_callbacks = [(c.class_path, plain(c.init_args)) for c in (cli.config.trainer.callbacks or [])]
    assert training_callbacks(hydra_callbacks) == training_callbacks(cli_callbacks)


def test_the_comparison_sees_a_difference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The views above are not blind: one changed number on either side breaks the equality."""
    monkeypatch.chdir(ROOT)
    base = model_view(instantiate(compose_cfg(["experiment=shapes"], tmp_path).model))
    for override in ("model.beta=2", "model.encoder.latent_dim=11", "model.optimizer.lr=0.01", "model/prior=mixture"):
        assert model_view(instantiate(compose_cfg(["experiment=shapes", override], tmp_path).model)) != base, override


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("mnist") else n for n in EXPERIMENTS]
)
def test_experiment_fast_dev_run(name: str, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [f"experiment={name}", "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false"], tmp_path
    )
    _skip_without_mnist(cfg)
    small = small_mnist() if needs_mnist(cfg) else SMALL_SHAPES
    cfg = compose_cfg(
        [f"experiment={name}", "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false", *small], tmp_path
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and "val/elbo" in metrics


def test_a_hydra_checkpoint_reloads_with_load_from_checkpoint_alone(tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "experiment=shapes",
            *SMALL_SHAPES,
            "model.beta=2.5",
            "model/prior=learnable",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            "callbacks=model_checkpoint",
            "logger=csv",
        ],
        tmp_path,
    )
    train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file()
    loaded = VAE.load_from_checkpoint(last)  # no encoder/decoder passed: rebuilt from the checkpoint's hparams
    assert loaded.beta == 2.5 and type(loaded.prior).__name__ == "LearnableGaussianPrior"
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    reference = instantiate(cfg.model)  # the same architecture, weights from the checkpoint file
    reference.load_state_dict(state)
    x = torch.rand(4, 1, 32, 32).round()
    loaded.eval(), reference.eval()
    torch.testing.assert_close(loaded.encode(x).mean, reference.encode(x).mean, rtol=0, atol=0)
    torch.testing.assert_close(loaded.reconstruct(x), reference.reconstruct(x), rtol=0, atol=0)


@pytest.mark.parametrize("overrides", [[], ["experiment=shapes"]], ids=["default", "shapes"])
def test_the_main_job_watches_for_collapse(overrides: list[str], tmp_path: Path, monkeypatch) -> None:
    """The main job (Hydra's default, experiment=shapes and configs/cli/shapes.yaml) runs PosteriorCollapseMonitor."""
    cfg = compose_cfg(overrides, tmp_path)
    assert "PosteriorCollapseMonitor" in {type(c).__name__ for c in instantiate_group(cfg.callbacks, Callback, "c")}
    monkeypatch.chdir(ROOT)
    args = ["--config", "configs/cli/shapes.yaml"]
    cli = VAECLI(VAE, LightningDataModule, subclass_mode_data=True, run=False, args=args)
    assert "PosteriorCollapseMonitor" in {type(c).__name__ for c in cli.trainer.callbacks}


def test_the_collapse_experiment_watches_the_posterior(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=mnist_collapse"], tmp_path)
    names = {type(c).__name__ for c in instantiate_group(cfg.callbacks, Callback, "callbacks")}
    assert {"PosteriorCollapseMonitor", "ReconstructionLogger"} <= names and "PriorSampleLogger" not in names
    assert type(instantiate(cfg.model).decoder).__name__ == "PixelCNNDecoder"


def test_the_task_returns_the_optimized_metric_to_a_sweeper(tmp_path: Path) -> None:
    from lightning_vae.cli.hydra import _task

    overrides = ["experiment=shapes", "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false", *SMALL_SHAPES]
    value = _task(compose_cfg([*overrides, "optimized_metric=val/elbo"], tmp_path))
    assert isinstance(value, float) and value < 0
    assert _task(compose_cfg(overrides, tmp_path)) is None
    with pytest.raises(
        ValueError, match=r"`optimized_metric` to name one of the final metrics \[.*'val/elbo'.*\], got 'val/nope'"
    ):
        _task(compose_cfg([*overrides, "optimized_metric=val/nope"], tmp_path))
