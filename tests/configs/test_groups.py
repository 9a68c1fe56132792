"""Every option of every config group composes and instantiates; bad overrides give Hydra's own clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("hydra", reason="needs hydra-core (a GPU check may run without it)")

from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.fabric.utilities.exceptions import MisconfigurationException  # noqa: E402
from lightning.pytorch import Callback, LightningDataModule, Trainer  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402
from support.hydra import SMALL_SHAPES, compose_cfg, options, small_mnist  # noqa: E402

from lightning_vae import VAE  # noqa: E402
from lightning_vae.cli.hydra import instantiate_group  # noqa: E402

GPU_ONLY_TRAINERS = {"gpu", "ddp", "fp16"}


def test_the_groups_of_the_issue_exist() -> None:
    assert {"shapes", "mnist"} <= set(options("data"))
    assert {"vae"} <= set(options("model"))
    assert {"conv", "mlp"} <= set(options("model/encoder")) and {"conv", "mlp"} <= set(options("model/decoder"))
    assert {"bernoulli", "gaussian", "categorical", "logistic_mixture"} <= set(options("model/likelihood"))
    assert {"standard_normal", "learnable", "mixture", "vamp"} <= set(options("model/prior"))
    assert {"cpu", "gpu", "ddp", "bf16", "fp16"} <= set(options("trainer"))
    assert {"annealing", "free_bits", "collapse", "images", "model_checkpoint"} <= set(options("callbacks"))
    assert {"tensorboard", "csv"} <= set(options("logger"))
    assert {"shapes_beta_vae", "mnist_mlp", "mnist_conv", "mnist_collapse"} <= set(options("experiment"))
    assert {"default", "fdr"} <= set(options("debug"))


def test_the_default_config_composes_and_instantiates(tmp_path: Path) -> None:
    cfg = compose_cfg([], tmp_path)
    assert cfg.model.encoder._target_ == "lightning_vae.nets.ConvEncoder" and cfg.data.image_size == 32
    assert isinstance(instantiate(cfg.data), LightningDataModule)
    assert isinstance(instantiate(cfg.model), VAE)
    assert all(isinstance(c, Callback) for c in instantiate_group(cfg.callbacks, Callback, "callbacks"))
    loggers = instantiate_group(cfg.logger, Logger, "logger")
    assert [type(lg).__name__ for lg in loggers] == ["TensorBoardLogger"]
    assert loggers[0].log_dir.rstrip("/") == str(tmp_path / "tensorboard")
    assert isinstance(instantiate(cfg.trainer), Trainer)


@pytest.mark.parametrize("option", options("data"))
def test_data_options(option: str, tmp_path: Path) -> None:
    extra = small_mnist() if option.startswith("mnist") else SMALL_SHAPES
    datamodule = instantiate(compose_cfg([f"data={option}", *extra], tmp_path).data)
    assert isinstance(datamodule, LightningDataModule)


def _model_and_batch(overrides: list[str], tmp_path: Path) -> tuple[VAE, torch.Tensor]:
    model = instantiate(compose_cfg(overrides, tmp_path).model)
    assert isinstance(model, VAE)
    return model, torch.rand(3, *model.data_shape)


@pytest.mark.parametrize("net", sorted(set(options("model/encoder")) & set(options("model/decoder"))))
def test_encoder_decoder_options_fit_together(net: str, tmp_path: Path) -> None:
    extra = ["model.encoder.input_shape=[1,32,32]"] if net == "mlp" else []
    model, x = _model_and_batch([f"model/encoder={net}", f"model/decoder={net}", *extra], tmp_path)
    terms, _ = model.compute_terms(x.round())
    assert torch.isfinite(terms.loss)
    assert model.hparams.encoder["init_args"]["latent_dim"] == model.hparams.decoder["init_args"]["latent_dim"]


def test_the_autoregressive_decoder_follows_the_conv_encoder(tmp_path: Path) -> None:
    model, x = _model_and_batch(
        ["model/decoder=pixelcnn", "model.encoder.image_size=28", "model.encoder.latent_dim=6"], tmp_path
    )
    assert model.autoregressive and model.hparams.decoder["init_args"]["image_shape"] == [1, 28, 28]
    assert model.hparams.decoder["init_args"]["latent_dim"] == 6
    assert torch.isfinite(model.compute_terms(x.round())[0].loss)


@pytest.mark.parametrize("likelihood", options("model/likelihood"))
def test_likelihood_options_match_the_decoder(likelihood: str, tmp_path: Path) -> None:
    """Each likelihood choice sets what the decoder must output (e.g. 256 logits per pixel), so a step runs."""
    model, x = _model_and_batch([f"model/likelihood={likelihood}"], tmp_path)
    assert model.hparams.likelihood == likelihood
    x = (x * 255).round() / 255 if likelihood in ("categorical", "logistic_mixture") else x.round()
    terms, _ = model.compute_terms(x)
    assert torch.isfinite(terms.loss)


@pytest.mark.parametrize("prior", options("model/prior"))
def test_prior_options(prior: str, tmp_path: Path) -> None:
    model, x = _model_and_batch([f"model/prior={prior}"], tmp_path)
    assert model.hparams.prior == prior
    assert torch.isfinite(model.compute_terms(x.round())[0].loss)
    assert model.sample(2).shape == (2, *model.data_shape)


@pytest.mark.parametrize("objective", options("model/objective"))
def test_objective_options(objective: str, tmp_path: Path) -> None:
    model, x = _model_and_batch([f"model/objective={objective}"], tmp_path)
    expected = "ELBO" if objective == "elbo" else objective.replace("_", "").lower()
    assert type(model.objective).__name__.lower().replace("_", "") == expected.lower()
    assert torch.isfinite(model.compute_terms(x.round())[0].loss)


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options(option: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"trainer={option}"], tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if option in GPU_ONLY_TRAINERS and not torch.cuda.is_available():
        assert cfg.trainer.accelerator == "gpu"
        with pytest.raises(InstantiationException, match="(?i)no supported gpu backend") as raised:
            instantiate(cfg.trainer)
        assert isinstance(raised.value.__cause__, MisconfigurationException)
        return
    trainer = instantiate(cfg.trainer)
    assert isinstance(trainer, Trainer)
    if option == "bf16":
        assert trainer.precision == "bf16-mixed"
    if option == "ddp_cpu":
        assert trainer.world_size == 2 and type(trainer.strategy).__name__ == "DDPStrategy"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("option", sorted(GPU_ONLY_TRAINERS))
def test_gpu_trainer_options_instantiate_on_gpu(option: str, tmp_path: Path) -> None:
    overrides = [f"trainer={option}"] + (
        ["trainer.devices=1"] if option == "ddp" and torch.cuda.device_count() < 2 else []
    )
    trainer = instantiate(compose_cfg(overrides, tmp_path).trainer)
    assert type(trainer.accelerator).__name__ == "CUDAAccelerator"


@pytest.mark.parametrize("option", options("callbacks"))
def test_callback_options(option: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"callbacks={option}"], tmp_path)
    callbacks = instantiate_group(cfg.callbacks, Callback, "callbacks")
    assert len(callbacks) == len([k for k, v in (cfg.callbacks or {}).items() if v is not None])
    assert all(isinstance(c, Callback) for c in callbacks)


def test_callback_groups_combine_as_a_list(tmp_path: Path) -> None:
    cfg = compose_cfg(["callbacks=[default,annealing,free_bits,collapse]"], tmp_path)
    names = {type(c).__name__ for c in instantiate_group(cfg.callbacks, Callback, "callbacks")}
    assert {"KLAnnealing", "FreeBits", "PosteriorCollapseMonitor", "ModelCheckpoint", "ReconstructionLogger"} <= names


@pytest.mark.parametrize("option", options("logger"))
def test_logger_options(option: str, tmp_path: Path) -> None:
    loggers = instantiate_group(compose_cfg([f"logger={option}"], tmp_path).logger, Logger, "logger")
    assert loggers and all(str(lg.save_dir).startswith(str(tmp_path)) for lg in loggers)


@pytest.mark.parametrize("option", options("debug"))
def test_debug_options(option: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"debug={option}"], tmp_path)
    assert cfg.task_name == "debug"
    trainer = instantiate(cfg.trainer)
    assert trainer.max_epochs <= 30 and type(trainer.accelerator).__name__ == "CPUAccelerator"


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_options_instantiate(option: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={option}"], tmp_path)
    assert cfg.task_name == option
    assert isinstance(instantiate(cfg.data), LightningDataModule)
    assert isinstance(instantiate(cfg.model), VAE)
    assert instantiate_group(cfg.callbacks, Callback, "callbacks")
    assert isinstance(instantiate(cfg.trainer), Trainer)


def test_hparams_search_beta_sweep_is_a_multirun_over_beta(tmp_path: Path) -> None:
    cfg = compose_cfg(["hparams_search=beta_sweep"], tmp_path)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert [float(v) for v in str(cfg.hydra.sweeper.params["model.beta"]).split(",")] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert cfg.optimized_metric == "val/elbo"


# ---------------------------------------------------------------------------------------- bad overrides
def test_an_unknown_option_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(
        MissingConfigException, match=r"model/encoder.*transformer(?s:.*)Available options(?s:.*)conv(?s:.*)mlp"
    ):
        compose_cfg(["model/encoder=transformer"], tmp_path)
    with pytest.raises(MissingConfigException, match=r"experiment.*nope"):
        compose_cfg(["experiment=nope"], tmp_path)


def test_a_misspelt_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigCompositionException, match=r"Could not override 'model.bta'.\nTo append to your config use \+model.bta=4"
    ):
        compose_cfg(["model.bta=4"], tmp_path)


def test_a_malformed_override_is_a_parse_error(tmp_path: Path) -> None:
    from hydra.errors import OverrideParseException

    with pytest.raises(OverrideParseException, match=r"no viable alternative at input '\[1'"):
        compose_cfg(["model.beta=[1"], tmp_path)


def test_a_bad_value_fails_at_instantiation_with_the_module_message(tmp_path: Path) -> None:
    cfg = compose_cfg(["model.beta=-1"], tmp_path)
    with pytest.raises(InstantiationException, match=r"`beta` to be a finite float >= 0, got -1"):
        instantiate(cfg.model)
    cfg = compose_cfg(["model/likelihood=gaussian", "model.likelihood=poisson"], tmp_path)
    with pytest.raises(InstantiationException, match=r"`likelihood` to be one of .* got 'poisson'"):
        instantiate(cfg.model)


def test_instantiate_group_rejects_what_is_not_a_callback(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"`callbacks.oops` to build a Callback, got ConvEncoder"):
        instantiate_group({"oops": {"_target_": "lightning_vae.nets.ConvEncoder"}}, Callback, "callbacks")
    with pytest.raises(TypeError, match=r"`callbacks.flat` to be a config with `_target_`, got 3"):
        instantiate_group({"flat": 3}, Callback, "callbacks")
    with pytest.warns(UserWarning, match=r"`callbacks.bare` has settings \{'monitor': 'val/loss'\} but no `_target_`"):
        assert instantiate_group({"bare": {"monitor": "val/loss"}}, Callback, "callbacks") == []


def test_the_slurm_launch_is_multi_node_ddp_with_one_process_per_gpu(tmp_path: Path) -> None:
    cfg = compose_cfg(["launch=slurm", "launch.nodes=4", "launch.gpus_per_node=8"], tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (4, 8, 8)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy) == (4, 8, "ddp")
    assert cfg.trainer.accelerator == "gpu"


def test_the_optuna_search_minimises_the_iw_nll_over_beta_latent_size_and_lr(tmp_path: Path) -> None:
    cfg = compose_cfg(["hparams_search=shapes_optuna"], tmp_path)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert cfg.optimized_metric == "val/nll_iw" and cfg.hydra.sweeper.direction == "minimize"
    assert cfg.model.n_eval_samples > 1  # val/nll_iw is computed
    assert set(cfg.hydra.sweeper.params) == {"model.beta", "model.encoder.latent_dim", "model.optimizer.lr"}
    assert "ShapesDataModule" in cfg.data._target_
