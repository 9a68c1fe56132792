"""PixelCNNDecoder: autoregressive masks, conditioning on z, and its use in VAE (teacher forcing, sampling, IW-NLL)."""

from __future__ import annotations

import itertools

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import trainer_kwargs
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.metrics import ImportanceWeightedNLL
from lightning_vae.nets import MaskedConv2d, MLPEncoder, PixelCNNDecoder


def _dependence(decoder: PixelCNNDecoder, shape: tuple[int, int, int], i: int, j: int) -> torch.Tensor:
    """Which input pixels the output at (i, j) depends on: |d out[i, j] / d x| summed over channels, (H, W).

    Summed over 16 random inputs: for a single input every ReLU on the path to (i, j) can be inactive,
    which would hide a real dependence (never create one: the masks make later pixels' gradients exactly 0).
    """
    x = torch.rand(16, *shape, requires_grad=True)
    out = decoder(torch.randn(16, decoder.latent_dim), x)
    out[:, :, i, j].sum().backward()
    assert x.grad is not None
    return x.grad.abs().sum((0, 1))


@pytest.mark.parametrize("dilations", [None, [1, 2, 3]])
def test_every_output_pixel_sees_only_the_pixels_before_it(dilations):
    shape = (2, 7, 7)
    torch.manual_seed(0)
    decoder = PixelCNNDecoder(4, shape, channels=8, n_layers=3, kernel_size=3, first_kernel_size=5, dilations=dilations)
    for i, j in itertools.product(range(7), range(7)):
        dep = _dependence(decoder, shape, i, j)
        order = torch.arange(49).view(7, 7)
        assert torch.all(dep[order >= 7 * i + j] == 0), (i, j)  # itself and everything after: never
        if (i, j) != (0, 0):
            assert (dep[i, j - 1] if j else dep[i - 1, j]).item() > 0  # the pixel to the left (or above): yes
    far = _dependence(decoder, shape, 6, 6)
    assert (far[:6] > 0).sum() >= (6 if dilations is None else 20)  # dilation widens the view above


def test_output_depends_on_z_and_keeps_leading_dimensions():
    decoder = PixelCNNDecoder(3, (1, 5, 5), channels=8, n_layers=2, params_per_element=4)
    x = torch.rand(2, 6, 1, 5, 5)
    z = torch.randn(2, 6, 3)
    out = decoder(z, x)
    assert out.shape == (2, 6, 4, 1, 5, 5)
    assert not torch.allclose(decoder(torch.randn(2, 6, 3), x), out)
    torch.testing.assert_close(decoder(z[0], x[0]), out[0])
    with pytest.raises(ValueError, match="same leading dimensions"):
        decoder(torch.randn(5, 3), torch.rand(4, 1, 5, 5))


def test_constructor_validates_its_arguments():
    with pytest.raises(ValueError, match="image_shape"):
        PixelCNNDecoder(2, (28, 28))
    with pytest.raises(ValueError, match="dilations"):
        PixelCNNDecoder(2, (1, 8, 8), n_layers=2, dilations=[1])
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2d(1, 1, 4, "A")
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d(1, 1, 3, "C")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: MaskedConv2d(1, 1, 4, "A"), ValueError, r"`kernel_size` to be odd, got 4"),
        (lambda: MaskedConv2d(1, 1, 3, "C"), ValueError, r"`mask_type` to be one of \('A', 'B'\), got 'C'"),
        (lambda: PixelCNNDecoder(2, (1, 8, 8), n_layers=2, dilations=[1, 0]), ValueError, r"`dilations` to be"),
        (lambda: PixelCNNDecoder(2, (1, 8, 8), n_layers=2, dilations=[1]), ValueError, r"`dilations` to hold 2"),
    ],
)
def test_arguments_are_checked(factory, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


def _pixelcnn_vae(shape=(1, 6, 6), latent=3) -> VAE:
    torch.manual_seed(0)
    return VAE(
        MLPEncoder(shape, latent_dim=latent, hidden_sizes=(16,)),
        PixelCNNDecoder(latent, shape, channels=8, n_layers=2),
        likelihood="bernoulli",
    )


def test_vae_passes_x_to_an_autoregressive_decoder():
    vae = _pixelcnn_vae()
    x = torch.bernoulli(torch.rand(4, 1, 6, 6))
    out = vae(x, n_samples=3)
    assert vae.autoregressive and out.decoder_output.shape == (3, 4, 1, 6, 6)
    # Teacher forcing: the output for sample s is the decoder applied to (z_s, x).
    torch.testing.assert_close(out.decoder_output[1], vae.decoder(out.z[1], x))
    assert vae.log_joint(x, out.z).shape == (3, 4)
    assert vae.reconstruct(x).shape == x.shape
    with pytest.raises(ValueError, match="needs the data"):
        vae.decode(out.z[0])
    nll = ImportanceWeightedNLL(n_samples=20, chunk_size=16)
    nll.update(vae, x)
    assert 0 < nll.compute().item() < 36 * 2  # well below the 36 * log 2 of a fair coin per pixel times 2


def test_sampling_pixel_by_pixel_follows_the_model_distribution():
    # A decoder that ignores z (conditioning weights zeroed): p(x) = p(x | z) for any z, and it can be enumerated.
    shape = (1, 2, 2)
    vae = _pixelcnn_vae(shape)
    with torch.no_grad():
        vae.decoder.condition.weight.zero_()
        vae.decoder.first.weight.mul_(6.0)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(16, *shape)
    with torch.no_grad():
        log_p = vae.likelihood.log_prob(images, vae.decoder(torch.zeros(16, 3), images))
    probs = log_p.exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)  # a normalised autoregressive model
    torch.manual_seed(1)
    samples = vae.sample(6000, mean=False)
    codes = (samples.view(-1, 4) * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=16).float() / 6000
    assert (freq - probs).abs().sum().item() / 2 < 0.03  # total variation
    means = vae.sample(3, mean=True)
    assert means.shape == (3, *shape) and torch.all((means >= 0) & (means <= 1))


def test_a_pixelcnn_vae_trains_and_reloads(tmp_path):
    vae = _pixelcnn_vae()
    data = DataLoader(TensorDataset(torch.bernoulli(torch.rand(32, 1, 6, 6))), batch_size=8)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, enable_checkpointing=True))
    trainer.fit(vae, data, data)
    path = trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
    loaded = VAE.load_from_checkpoint(path)
    assert isinstance(loaded.decoder, PixelCNNDecoder) and loaded.autoregressive
    x = torch.bernoulli(torch.rand(2, 1, 6, 6))
    z = torch.randn(2, 3)
    torch.testing.assert_close(loaded.decode(z, x), vae.decode(z, x))
