"""The single-group model: one decode path for every use, sizes fixed once, the old checkpoint layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule
from lightning_vae.models import LatentVariableModel, VAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder


class StrictDecoder(nn.Module):
    """A decoder that refuses anything but a (N, D) batch of latents."""

    def __init__(self, latent_dim: int = 3) -> None:
        super().__init__()
        self.net = nn.Linear(latent_dim, 16)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2:
            raise ValueError(f"expected (N, D), got {tuple(z.shape)}")
        return self.net(z).view(-1, 1, 4, 4)


def _strict_model() -> VAEModel:
    return VAEModel(MLPEncoder((1, 4, 4), latent_dim=3, hidden_sizes=(8,)), StrictDecoder())


def test_a_decoder_of_n_by_d_only_works_in_every_path() -> None:
    model = _strict_model()
    x = torch.rand(5, 1, 4, 4).round()
    inference, generative = model(x, n_samples=4)
    assert generative.params.shape == (4, 5, 1, 4, 4)
    assert model.log_joint(x, inference.z["z"]).shape == (4, 5)
    assert model.sample(3).shape == (3, 1, 4, 4)
    assert model.reconstruct(x).shape == x.shape


def test_log_joint_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    model = _strict_model().double()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64).round()
    z = torch.randn(2, 5, 3, dtype=torch.float64)
    logits = model.decoder(z.reshape(-1, 3)).reshape(2, 5, 1, 4, 4)
    reference = Independent(Bernoulli(logits=logits), 3).log_prob(x) + Independent(
        Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1
    ).log_prob(z)
    torch.testing.assert_close(model.log_joint(x, z).double(), reference, rtol=1e-5, atol=1e-5)


def test_queries_do_not_change_sizes_and_fix_shapes_fixes_them_once() -> None:
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))

    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = encoder

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return self.body(x).chunk(2, dim=-1)

    model = VAEModel(Split(), StrictDecoder())
    assert model.latent_dim is None and model.data_shape is None
    model.encode(torch.rand(2, 1, 4, 4))
    assert model.latent_dim is None  # a query learns nothing
    with pytest.raises(ValueError, match="latent size is unknown"):
        model.sample(2)
    model.fix_shapes(torch.rand(2, 1, 4, 4))
    assert model.latent_dim == 3 and model.data_shape == (1, 4, 4)
    assert model.sample(2).shape == (2, 1, 4, 4)


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(TypeError, match="Expected `encoder` to be a torch.nn.Module"):
        VAEModel("mlp", StrictDecoder())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `likelihood` to be one of"):
        VAEModel(MLPEncoder((1, 4, 4), 3), StrictDecoder(), likelihood="poisson")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `latent_dim` to be an int >= 1"):
        VAEModel(MLPEncoder((1, 4, 4), 3), StrictDecoder(), latent_dim=0)
    with pytest.raises(ValueError, match="Expected `z` to hold samples of every latent group"):
        _strict_model().log_joint(torch.rand(2, 1, 4, 4), {"y": torch.zeros(1, 2, 3)})


def test_vae_takes_a_model_and_refuses_it_with_networks() -> None:
    model = _strict_model()
    vae = VAE(model=model)
    assert vae.model is model and vae.encoder is model.encoder and vae.likelihood is model.likelihood
    with pytest.raises(ValueError, match="Expected `model` alone"):
        VAE(MLPEncoder((1, 4, 4), 3), model=_strict_model())
    with pytest.raises(TypeError, match="LatentVariableModel"):
        VAE(model=nn.Linear(2, 2))  # type: ignore[arg-type]
    assert isinstance(vae.model, LatentVariableModel)


def test_a_checkpoint_with_networks_at_the_top_level_still_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = VAE(MLPEncoder((1, 4, 4), 3, hidden_sizes=(8,)), MLPDecoder(3, (1, 4, 4), hidden_sizes=(8,)))
    x = torch.rand(8, 1, 4, 4).round()
    trainer = Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, accelerator="cpu")  # fmt: skip
    trainer.fit(vae, TensorDataModule(x, batch_size=4))
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    # The layout of checkpoints written before the model moved under `model.`: encoder.*, decoder.*, prior.*
    checkpoint["state_dict"] = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, path)
    loaded = VAE.load_from_checkpoint(path)
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_fast_path_is_worked_out_again_when_a_part_is_replaced() -> None:
    from lightning_vae.distributions.priors import LearnableGaussianPrior, StandardNormalPrior

    model = VAEModel(MLPEncoder((1, 8, 8), latent_dim=4), MLPDecoder(4, (1, 8, 8)))
    assert model.fast_path is True
    model.prior = LearnableGaussianPrior(4)  # a prior the ELBO's closed form does not cover
    assert model.fast_path is False
    model.prior = StandardNormalPrior(4)
    assert model.fast_path is True

    class Autoregressive(MLPDecoder):
        autoregressive = True

    model.decoder = Autoregressive(4, (1, 8, 8))
    assert model.fast_path is False
