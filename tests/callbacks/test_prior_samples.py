"""PriorSampleLogger draws from its own generator: the same seed gives the same samples, the global state is
untouched."""

from __future__ import annotations

import pytest
import torch
from support.images import small_vae

from lightning_vae import VAE
from lightning_vae.callbacks import PriorSampleLogger
from lightning_vae.models import StackedVAEModel


def test_prior_samples_leave_the_global_random_state_alone() -> None:
    model = small_vae().eval()
    state = torch.random.get_rng_state()
    first = PriorSampleLogger(n_images=6, seed=11).samples(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(PriorSampleLogger(n_images=6, seed=11).samples(model), first, rtol=0, atol=0)
    assert not torch.equal(PriorSampleLogger(n_images=6, seed=12).samples(model), first)


def test_prior_samples_of_a_stacked_model_come_from_its_ancestral_sampler() -> None:
    torch.manual_seed(0)
    vae = VAE(model=StackedVAEModel((1, 4, 4), latent_sizes=(4, 2), hidden_sizes=((8,), (8,)))).eval()
    samples = PriorSampleLogger(n_images=5, seed=3).samples(vae)
    torch.manual_seed(3)
    with torch.no_grad():
        z = vae.model.prior_sample(5)  # z2 ~ p(z2), then z1 ~ p(z1 | z2)
        expected = torch.sigmoid(vae.model.decoder(z["z1"][0])).view(5, 1, 4, 4)
    torch.testing.assert_close(samples, expected, rtol=0, atol=0)
    assert not torch.equal(PriorSampleLogger(n_images=5, seed=4).samples(vae), samples)


def _cvae(n_classes: int | None = 3) -> VAE:
    from lightning_vae.models import ConditionalVAEModel
    from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder

    context_dim = 3 if n_classes else 2
    model = ConditionalVAEModel(
        ConditionalMLPEncoder((1, 4, 4), context_dim, 2, (8,)),
        ConditionalMLPDecoder(2, context_dim, (1, 4, 4), (8,)),
        n_classes=n_classes,
    )
    return VAE(model=model).eval()


def test_a_class_conditional_model_is_sampled_one_row_per_class_with_the_same_noise_in_every_row() -> None:
    from lightning_vae.callbacks.views import class_samples

    vae = _cvae()
    grid = class_samples(vae, n_per_class=4, seed=7)
    torch.manual_seed(7)
    z = torch.randn(4, 2)  # what the standard normal prior draws for (1, 4) samples
    with torch.no_grad():
        rows = [torch.sigmoid(vae.model.decoder(z, torch.eye(3)[[c] * 4])).view(4, 1, 4, 4) for c in range(3)]
    torch.testing.assert_close(grid, torch.cat(rows))
    with pytest.raises(ValueError, match="conditional on class labels"):
        class_samples(_cvae(n_classes=None), 2)


def test_prior_sample_logger_writes_the_class_grid_of_a_conditional_model(tmp_path) -> None:
    from lightning.pytorch import Trainer
    from support.modules import trainer_kwargs
    from torch.utils.data import DataLoader, TensorDataset

    vae = _cvae().train()
    x, y = torch.bernoulli(torch.rand(8, 1, 4, 4)), torch.randint(0, 3, (8,))
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    logger = PriorSampleLogger(n_images=6, seed=2)
    drawn = []
    logger.emit = lambda trainer, tag, images, nrow, **kw: drawn.append((images.shape, nrow)) or []  # type: ignore[method-assign]
    logger.due = lambda trainer: True  # type: ignore[method-assign]
    trainer = Trainer(**trainer_kwargs(tmp_path, callbacks=[logger], max_epochs=1, num_sanity_val_steps=0))
    trainer.fit(vae, loader, loader)
    assert drawn == [(torch.Size([6, 1, 4, 4]), 2)]  # 3 classes x 2 columns
