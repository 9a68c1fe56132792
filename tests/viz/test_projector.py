"""The embedding projector's files (tensor, metadata, sprite, config), read back with TensorBoard's own parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from support.images import decode_png  # the PNG reader written from the specification
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from lightning_vae.viz import write_projector_embedding


def read_config(log_dir: Path) -> ProjectorConfig:
    return text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())


def test_write_projector_embedding_files(tmp_path: Path) -> None:
    vectors = torch.randn(5, 3)
    labels = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    thumbs = torch.rand(5, 1, 4, 6)
    folder = Path(write_projector_embedding(tmp_path, "latent/mu", 12, vectors, labels, ["a", "b"], thumbs))
    assert folder == tmp_path / "00012" / "latent_mu"
    np.testing.assert_allclose(
        np.loadtxt(folder / "tensors.tsv", delimiter="\t"), vectors.numpy(), rtol=1e-5, atol=1e-6
    )
    assert (folder / "metadata.tsv").read_text().splitlines() == ["a\tb", "0\t1", "2\t3", "4\t5", "6\t7", "8\t9"]
    sprite = decode_png((folder / "sprite.png").read_bytes())[..., 0]  # 3 x 3 cells of 4 x 6, no padding, row by row
    assert sprite.shape == (3 * 4, 3 * 6)
    for i in range(5):
        r, c = divmod(i, 3)
        expected = np.rint(thumbs[i, 0].numpy() * 255)
        np.testing.assert_array_equal(sprite[r * 4 : (r + 1) * 4, c * 6 : (c + 1) * 6], expected)
    (entry,) = read_config(tmp_path).embeddings
    assert entry.tensor_name == "latent/mu:00012" and entry.tensor_path == "00012/latent_mu/tensors.tsv"
    assert (
        entry.metadata_path == "00012/latent_mu/metadata.tsv"
        and entry.sprite.image_path == "00012/latent_mu/sprite.png"
    )
    assert list(entry.sprite.single_image_dim) == [6, 4]  # width, height

    write_projector_embedding(tmp_path, "latent/mu", 20, vectors, torch.arange(5))  # a later step adds an entry
    write_projector_embedding(tmp_path, "latent/mu", 20, vectors * 2)  # the same step replaces its entry
    names = [e.tensor_name for e in read_config(tmp_path).embeddings]
    assert names == ["latent/mu:00012", "latent/mu:00020"]
    assert (tmp_path / "00020" / "latent_mu" / "metadata.tsv").read_text().splitlines()[:2] == ["0", "1"]  # one column


def test_write_projector_embedding_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`vectors` of shape \(N, D\)"):
        write_projector_embedding(tmp_path, "t", 0, torch.zeros(3))
    with pytest.raises(TypeError, match=r"Expected `vectors` to be a tensor, got \[\[0.0, 1.0\]\] \(list\)"):
        write_projector_embedding(tmp_path, "t", 0, [[0.0, 1.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`metadata` of shape \(3,\) or \(3, K\), got \(2,\)"):
        write_projector_embedding(tmp_path, "t", 0, torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"`metadata_header` with 2 names, got \['a'\]"):
        write_projector_embedding(tmp_path, "t", 0, torch.zeros(3, 2), torch.zeros(3, 2), ["a"])
    with pytest.raises(ValueError, match="the projector takes at most 8192x8192"):
        write_projector_embedding(
            tmp_path, "t", 0, torch.zeros(5, 2), thumbnails=torch.zeros(1, 1, 1, 1).expand(5, 1, 4097, 4097)
        )
