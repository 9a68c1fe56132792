"""What the export tests share: small VAEs, running an ONNX file, and the latent a sampler's noise stands for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Trainer

from lightning_vae import VAE
from lightning_vae.data import ShapesDataModule
from lightning_vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from support.modules import trainer_kwargs

SHAPE, LATENT = (1, 28, 28), 4
BATCHES = (1, 5)  # the graphs are traced at batch 2: both sizes differ from it


def mlp_vae(**kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder(SHAPE, LATENT, hidden_sizes=(32,)), MLPDecoder(LATENT, SHAPE, hidden_sizes=(32,)), **kwargs)


def conv_vae(**kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(ConvEncoder(1, 28, latent_dim=LATENT), ConvDecoder(LATENT, 1, 28), **kwargs)


def onnx_run(path: Path, **inputs: torch.Tensor) -> list[np.ndarray]:
    """Run an ONNX file in onnxruntime, checking its input names and its named, dynamic batch dimension."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(inputs)
    assert all(i.shape[0] == "batch" for i in session.get_inputs())  # a named, dynamic batch dimension
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})


def reference_latent(vae: VAE, noise: torch.Tensor, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """z for standard normal noise, from the prior's parameters (NumPy inverse CDF for the mixture)."""
    prior = vae.prior
    if hasattr(prior, "logits"):  # mixture of Gaussians
        weights = torch.softmax(prior.logits.detach().double(), 0).numpy()
        k = np.searchsorted(np.cumsum(weights), uniform.double().numpy(), side="right")
        k = torch.from_numpy(np.minimum(k, len(weights) - 1))
        return prior.locs.detach()[k] + torch.exp(0.5 * prior.log_vars.detach()[k]) * noise
    if hasattr(prior, "log_var"):  # learnable Gaussian
        return prior.loc.detach() + torch.exp(0.5 * prior.log_var.detach()) * noise
    return noise


def expected_outputs(vae: VAE, n: int, seed: int) -> tuple[dict, dict]:
    """Inputs of the three graphs at batch ``n`` and what the PyTorch model gives for them."""
    g = torch.Generator().manual_seed(seed)
    x, z, noise, uniform = (
        torch.rand(n, *SHAPE, generator=g),
        torch.randn(n, LATENT, generator=g),
        torch.randn(n, LATENT, generator=g),
        torch.rand(n, generator=g),
    )
    with torch.no_grad():
        q = vae.encode(x)
        mixture = hasattr(vae.prior, "logits")
        sampler_in = {"noise": noise, "uniform": uniform} if mixture else {"noise": noise}
        expected = {
            "encoder": [q.mean, q.log_var],
            "decoder": [vae.likelihood.mean(vae.decode(z))],
            "sampler": [vae.likelihood.mean(vae.decode(reference_latent(vae, noise, uniform if mixture else None)))],
        }
    return {"encoder": {"x": x}, "decoder": {"z": z}, "sampler": sampler_in}, expected


def train_checkpoint(root: Path) -> Path:
    """An MLP VAE with a learnable prior, trained two steps on 28-pixel shapes; its checkpoint."""
    trainer = Trainer(**trainer_kwargs(root, max_steps=2, limit_val_batches=1))
    trainer.fit(mlp_vae(prior="learnable"), ShapesDataModule(image_size=28, n_train=32, n_val=16, batch_size=16))
    trainer.save_checkpoint(root / "model.ckpt")
    return root / "model.ckpt"
