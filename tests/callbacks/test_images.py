"""Image views: grids and PNG against independent references, and what lands in TensorBoard after a real run."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from support.modules import trainer_kwargs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_vae import VAE
from lightning_vae.callbacks import LatentTraversalLogger, PriorSampleLogger, ReconstructionLogger
from lightning_vae.callbacks.images import encode_png, image_summary, interleave_rows, make_grid
from lightning_vae.data import ShapesDataModule, TensorDataModule
from lightning_vae.nets import MLPDecoder, MLPEncoder

SIDE, LATENT = 28, 4


# ---------------------------------------------------------------------------------------- references
def reference_grid(images: np.ndarray, nrow: int, padding: int, pad_value: float) -> np.ndarray:
    """Cell-by-cell placement, written from the layout rule (row-major cells of (H + p) x (W + p) after a p border)."""
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value, dtype=images.dtype)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        out[:, top : top + h, left : left + w] = images[i]
    return out


def decode_png(data: bytes) -> np.ndarray:
    """A PNG reader written from the specification (8-bit, no interlace, filter 0 only), checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and interlace == 0
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, channels)


def quantize(images: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, C) uint8, rounding as any 8-bit image writer does."""
    return np.rint(images.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- grid and PNG
@pytest.mark.parametrize(("n", "nrow", "padding"), [(1, 8, 2), (5, 3, 1), (8, 4, 0), (7, 7, 3), (10, 4, 2)])
def test_make_grid_places_each_image_in_its_cell(n: int, nrow: int, padding: int) -> None:
    images = torch.rand(n, 3, 5, 6)
    got = make_grid(images, nrow=nrow, padding=padding, pad_value=0.25)
    np.testing.assert_array_equal(got.numpy(), reference_grid(images.numpy(), nrow, padding, 0.25))


def test_make_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"images of shape \(N, C, H, W\), got \(3, 4, 4\)"):
        make_grid(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="`nrow` to be a positive int, got 0"):
        make_grid(torch.rand(2, 1, 4, 4), nrow=0)
    with pytest.raises(ValueError, match="`padding` to be an int >= 0, got -1"):
        make_grid(torch.rand(2, 1, 4, 4), padding=-1)


def test_interleave_rows_alternates_rows_of_inputs_and_outputs() -> None:
    x, y = torch.arange(5.0).view(5, 1, 1, 1), 10 + torch.arange(5.0).view(5, 1, 1, 1)
    got = interleave_rows(x, y, nrow=3, fill=-1.0).flatten().tolist()
    assert got == [0, 1, 2, 10, 11, 12, 3, 4, -1, 13, 14, -1]


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_encode_png_round_trips_through_a_spec_reader(channels: int) -> None:
    array = np.random.default_rng(channels).integers(0, 256, size=(7, 11, channels), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(array)), array)


def test_encode_png_from_a_float_tensor_rounds_to_8_bit() -> None:
    image = torch.rand(3, 9, 13)
    np.testing.assert_array_equal(decode_png(encode_png(image)), quantize(image))
    np.testing.assert_array_equal(decode_png(encode_png(np.full((2, 3), 200, np.uint8)))[..., 0], np.full((2, 3), 200))


def test_encode_png_is_read_by_pillow() -> None:
    """A second, independent decoder (Pillow is only a test-time reference, not a dependency)."""
    image_module = pytest.importorskip("PIL.Image")
    for channels, mode in ((1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")):
        array = np.random.default_rng(0).integers(0, 256, size=(6, 5, channels), dtype=np.uint8)
        decoded = image_module.open(io.BytesIO(encode_png(array)))
        assert decoded.mode == mode
        np.testing.assert_array_equal(np.asarray(decoded).reshape(6, 5, channels), array)


def test_encode_png_rejects_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match=r"uint8 array \(H, W, C\) with C in \(1, 2, 3, 4\), got dtype float64"):
        encode_png(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"uint8 array .* shape \(2, 2, 5\)"):
        encode_png(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match=r"tensor image of shape \(C, H, W\), got \(2, 2\)"):
        encode_png(torch.zeros(2, 2))


def test_image_summary_is_what_tensorboard_reads_as_an_image() -> None:
    image = torch.rand(1, 4, 6)
    value = image_summary("a/tag", image).value[0]
    assert value.tag == "a/tag" and (value.image.height, value.image.width, value.image.colorspace) == (4, 6, 1)
    np.testing.assert_array_equal(decode_png(value.image.encoded_image_string), quantize(image))


# ---------------------------------------------------------------------------------------- in a real run
def small_vae() -> VAE:
    shape = (1, SIDE, SIDE)
    return VAE(MLPEncoder(shape, latent_dim=LATENT, hidden_sizes=(32,)), MLPDecoder(LATENT, shape, hidden_sizes=(32,)))


def shapes(n_val: int = 64) -> ShapesDataModule:
    return ShapesDataModule(image_size=SIDE, n_train=128, n_val=n_val, batch_size=32)


def fit(tmp_path: Path, callbacks: list, max_epochs: int = 2, **overrides) -> tuple[Trainer, VAE, ShapesDataModule]:
    model, data = small_vae(), shapes()
    logger = overrides.pop("logger", TensorBoardLogger(tmp_path, name="tb", version=0))
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=max_epochs, logger=logger, callbacks=callbacks, **overrides)
    )
    trainer.fit(model, data)
    return trainer, model, data


def events(trainer: Trainer) -> EventAccumulator:
    accumulator = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def last_image(accumulator: EventAccumulator, tag: str) -> np.ndarray:
    return decode_png(accumulator.Images(tag)[-1].encoded_image_string)


def test_views_log_grids_of_fixed_examples_and_fixed_noise(tmp_path: Path) -> None:
    views = [
        ReconstructionLogger(n_images=12, nrow=8),
        PriorSampleLogger(n_images=10, nrow=5, seed=3),
        LatentTraversalLogger(n_dims=3, n_steps=5, limit=2.0),
    ]
    trainer, model, data = fit(tmp_path, views)
    acc = events(trainer)
    assert {"images/reconstructions", "images/samples", "images/traversals"} <= set(acc.Tags()["images"])
    steps_per_epoch = trainer.num_training_batches
    for tag in ("images/reconstructions", "images/samples", "images/traversals"):
        assert [e.step for e in acc.Images(tag)] == [steps_per_epoch, 2 * steps_per_epoch]  # end of each validation

    model.eval()
    fixed = data.val_set.images[:12]  # the first validation examples, every epoch
    pad = lambda t: torch.cat([t, torch.ones(4, *t.shape[1:])])  # noqa: E731 - the short second row is filled white
    expected = torch.cat([fixed[:8], model.reconstruct(fixed)[:8], pad(fixed[8:]), pad(model.reconstruct(fixed)[8:])])
    got = last_image(acc, "images/reconstructions")
    assert got.shape == (2 + 4 * (SIDE + 2), 2 + 8 * (SIDE + 2), 1)
    reference = quantize(torch.from_numpy(reference_grid(expected.numpy(), 8, 2, 1.0)))
    assert np.abs(got.astype(int) - reference.astype(int)).max() <= 1

    torch.manual_seed(3)  # fixed latent noise: the same draw as the callback's, with the global generator
    samples = model.sample(10)
    reference = quantize(torch.from_numpy(reference_grid(samples.numpy(), 5, 2, 1.0)))
    assert np.abs(last_image(acc, "images/samples").astype(int) - reference.astype(int)).max() <= 1


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


def test_prior_samples_leave_the_global_random_state_alone() -> None:
    model = small_vae().eval()
    state = torch.random.get_rng_state()
    first = PriorSampleLogger(n_images=6, seed=11).samples(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(PriorSampleLogger(n_images=6, seed=11).samples(model), first, rtol=0, atol=0)
    assert not torch.equal(PriorSampleLogger(n_images=6, seed=12).samples(model), first)


def test_every_n_epochs(tmp_path: Path) -> None:
    trainer, _, _ = fit(tmp_path, [ReconstructionLogger(every_n_epochs=2)], max_epochs=3)
    assert [e.step for e in events(trainer).Images("images/reconstructions")] == [2 * trainer.num_training_batches]


def test_only_global_rank_zero_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(VAE, "reconstruct", lambda self, x: calls.append("reconstruct") or x)
    monkeypatch.setattr(
        VAE, "sample", lambda self, n, mean=True: calls.append("sample") or torch.zeros(n, 1, SIDE, SIDE)
    )
    monkeypatch.setattr(Trainer, "is_global_zero", property(lambda self: False))
    views = [ReconstructionLogger(), PriorSampleLogger(), LatentTraversalLogger()]
    trainer, _, _ = fit(tmp_path, views, logger=TensorBoardLogger(tmp_path, name="tb", version=0))
    assert calls == [] and all(v._fixed is None for v in views)


def test_without_a_logger_the_views_go_to_png_files_announced_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    view = ReconstructionLogger(n_images=4, nrow=2)
    with caplog.at_level("INFO", logger="lightning.pytorch.utilities.rank_zero"):
        trainer, model, data = fit(tmp_path, [view], max_epochs=3, logger=False)
    assert trainer.current_epoch == 3
    steps = [(epoch + 1) * trainer.num_training_batches for epoch in range(3)]
    files = sorted((tmp_path / "images" / "reconstructions").glob("*.png"))
    assert [f.name for f in files] == [f"step_{step:06d}.png" for step in steps]
    notes = [r.getMessage() for r in caplog.records if "files under" in r.getMessage()]
    assert notes == [
        f"ReconstructionLogger: the trainer has no logger; the views go to PNG and CSV files under {tmp_path}"
    ]
    model.eval()
    fixed = data.val_set.images[:4]
    expected = torch.cat([fixed[:2], model.reconstruct(fixed)[:2], fixed[2:], model.reconstruct(fixed)[2:]])
    reference = quantize(torch.from_numpy(reference_grid(expected.numpy(), 2, 2, 1.0)))
    assert np.abs(decode_png(files[-1].read_bytes()).astype(int) - reference.astype(int)).max() <= 1


def test_data_that_are_not_images_are_skipped_with_a_warning(tmp_path: Path) -> None:
    model = VAE(MLPEncoder((6,), latent_dim=2, hidden_sizes=(8,)), MLPDecoder(2, (6,), hidden_sizes=(8,)))
    data = TensorDataModule(torch.rand(64, 6).round(), batch_size=16)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[ReconstructionLogger()])
    )
    with pytest.warns(UserWarning, match=r"examples of shape \(6,\) are not images"):
        trainer.fit(model, data)
    assert "images/reconstructions" not in events(trainer).Tags()["images"]


def test_a_module_without_the_methods_is_refused(tmp_path: Path) -> None:
    from lightning.pytorch.demos.boring_classes import BoringModel  # a LightningModule without reconstruct()

    trainer = Trainer(**trainer_kwargs(tmp_path, callbacks=[ReconstructionLogger()]))
    with pytest.raises(TypeError, match=r"ReconstructionLogger needs a module with `reconstruct` .* got BoringModel"):
        trainer.fit(BoringModel())


def test_validation_and_state_key() -> None:
    with pytest.raises(ValueError, match="`n_images` to be a positive int, got 0"):
        ReconstructionLogger(n_images=0)
    with pytest.raises(ValueError, match="`every_n_epochs` to be a positive int, got -1"):
        PriorSampleLogger(every_n_epochs=-1)
    with pytest.raises(TypeError, match="`seed` to be an int, got 1.5"):
        PriorSampleLogger(seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`value_range` to be a pair \(low, high\) with low < high, got \(1, 0\)"):
        ReconstructionLogger(value_range=(1, 0))
    with pytest.raises(ValueError, match="`n_examples` to be an int >= 2"):
        LatentTraversalLogger(n_examples=1)
    with pytest.raises(ValueError, match="`limit` to be a positive finite float, got 0"):
        LatentTraversalLogger(limit=0)
    with pytest.raises(ValueError, match="`tag` to be a non-empty string"):
        ReconstructionLogger(tag="")
    a, b = ReconstructionLogger(tag="images/a"), ReconstructionLogger(tag="images/b")
    assert a.state_key == "ReconstructionLogger{'tag': 'images/a'}" and a.state_key != b.state_key
    clone = pickle.loads(pickle.dumps(LatentTraversalLogger(n_dims=2, limit=1.5)))
    assert (clone.n_dims, clone.limit, clone.tag) == (2, 1.5, "images/traversals")
