"""LatentTraversalLogger: rows follow the most active dimensions, images match a NumPy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from support.images import LATENT, events, fit, last_image, quantize, reference_grid

from lightning_vae.callbacks import LatentTraversalLogger


def test_traversal_rows_follow_the_most_active_dimensions(tmp_path: Path) -> None:
    view = LatentTraversalLogger(n_dims=3, n_steps=5, limit=2.0, n_examples=64)
    trainer, model, data = fit(tmp_path, [view])
    model.eval()
    x = data.val_set.images[:64]
    means = model.encode(x).mean.detach().double().numpy()
    variance = means.var(axis=0, ddof=1)  # NumPy reference of Var_x E_q[z_d]
    dims = np.argsort(-variance, kind="stable")[:3]
    text = events(trainer).Tensors("images/traversals_dims/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("rows, top to bottom: ") and [int(t.split()[0][1:]) for t in text[21:].split(", ")] == list(
        dims
    )

    values = np.linspace(-2.0, 2.0, 5)
    z = np.repeat(means[:1], 15, axis=0).reshape(3, 5, LATENT)
    for row, d in enumerate(dims):
        z[row, :, d] = values
    with torch.no_grad():
        expected = model.likelihood.mean(model.decode(torch.from_numpy(z.reshape(15, LATENT)).float()))
    reference = quantize(torch.from_numpy(reference_grid(expected.numpy(), 5, 2, 1.0)))
    assert np.abs(last_image(events(trainer), "images/traversals").astype(int) - reference.astype(int)).max() <= 1
