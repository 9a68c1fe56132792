"""Corrupt or mismatched inputs stop with a ValueError that names the file and what is wrong."""

from __future__ import annotations

import gzip
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import tiny_vae, trainer_kwargs

from lightning_vae import VAE
from lightning_vae.checkpoints import load_checkpoint
from lightning_vae.cli.generate import main as generate_main
from lightning_vae.data import TensorDataModule
from lightning_vae.data.mnist import load_mnist, read_idx
from lightning_vae.nets import MLPDecoder, MLPEncoder


def _copy_mnist(mnist_dir: Path, tmp_path: Path) -> Path:
    for f in mnist_dir.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_truncated_gzip_names_the_file(mnist_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = (mnist_dir / path.name).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{path.name}.*truncated"):
        read_idx(path)


def test_crc_damaged_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"))
    raw[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{path.name}.*corrupt"):
        read_idx(path)


def test_short_idx_body_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match=r"x\.idx.*truncated or corrupt"):
        read_idx(path)


def test_corrupt_file_inside_load_mnist(mnist_dir: Path, tmp_path: Path) -> None:
    folder = _copy_mnist(mnist_dir, tmp_path)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(folder, "test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"not a checkpoint at all\n" * 10, "not a PyTorch checkpoint"),
    ],
)
def test_non_checkpoint_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    for load in (load_checkpoint, VAE.load_from_checkpoint):
        with pytest.raises(ValueError, match=message) as info:
            load(path)
        assert str(path) in str(info.value)


def test_torch_file_without_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"not a Lightning checkpoint.*state_dict"):
        VAE.load_from_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    vae = tiny_vae()
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, limit_val_batches=0))
    trainer.fit(vae, datamodule=TensorDataModule(torch.rand(16, 1, 8, 8), batch_size=8))
    trainer.save_checkpoint(tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"cut\.ckpt.*truncated or corrupt"):
        VAE.load_from_checkpoint(tmp_path / "cut.ckpt")
    # networks of another size than the weights: named as such
    with pytest.raises(ValueError, match="do not fit the networks"):
        VAE.load_from_checkpoint(
            tmp_path / "full.ckpt",
            encoder=MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(16,)),
            decoder=MLPDecoder(4, (1, 8, 8), hidden_sizes=(32,)),
        )


def test_wrong_image_size_for_the_encoder() -> None:
    vae = VAE(MLPEncoder((1, 28, 28), latent_dim=4), MLPDecoder(4, (1, 28, 28)))
    with pytest.raises(ValueError, match=r"MLPEncoder expects.*\(1, 28, 28\).*1, 32, 32"):
        vae.training_step(torch.rand(4, 1, 32, 32), 0)


# ---------------------------------------------------------------------------------------- bit flips in a checkpoint
@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("saved")
    trainer = Trainer(**trainer_kwargs(tmp, max_epochs=1, limit_val_batches=0))
    trainer.fit(tiny_vae(), datamodule=TensorDataModule(torch.rand(16, 1, 8, 8).round(), batch_size=8))
    trainer.save_checkpoint(tmp / "clean.ckpt")
    return tmp / "clean.ckpt"


def _flip_a_weight_bit(source: Path, target: Path) -> str:
    """Copy ``source`` with one bit of a tensor's bytes flipped (the exponent's top bit: a weight becomes ~1e38);
    returns the damaged member's name. torch.load does not check the zip's CRC-32s: the file loads without it."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 64)
    with open(source, "rb") as f:  # the member's data start after its local header
        f.seek(member.header_offset + 26)
        name_length, extra_length = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    start = member.header_offset + 30 + name_length + extra_length
    data[start + 3] ^= 0x40
    target.write_bytes(bytes(data))
    return member.filename


def test_a_flipped_bit_in_a_checkpoint_is_refused_everywhere(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    flipped = tmp_path / "flipped.ckpt"
    member = _flip_a_weight_bit(saved, flipped)
    weights = torch.load(flipped, weights_only=True)["state_dict"]  # what torch alone makes of it
    assert max(float(v.abs().max()) for v in weights.values()) > 1e30
    message = rf"flipped\.ckpt.*corrupt.*{member}.*CRC"
    with pytest.raises(ValueError, match=message):
        VAE.load_from_checkpoint(flipped)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(flipped)
    for command in ("sample", "export"):
        with pytest.raises(SystemExit) as exit_info:
            generate_main([command, "--ckpt_path", str(flipped), "--output", str(tmp_path / command)])
        assert exit_info.value.code == 2 and "CRC" in capsys.readouterr().err
        assert not (tmp_path / command).exists()
    # resume: the trainer reads the file through the module's checkpoint IO
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=2, limit_val_batches=0))
    with pytest.raises(ValueError, match=message):
        trainer.fit(tiny_vae(), datamodule=TensorDataModule(torch.rand(16, 1, 8, 8).round(), batch_size=8),
                    ckpt_path=flipped)  # fmt: skip
    # the command line: one line naming the file
    from lightning_vae.cli import main

    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", f"--ckpt_path={flipped}"])
    assert "flipped.ckpt" in str(exit_info.value.code) and "CRC" in str(exit_info.value.code)


# ---------------------------------------------------------------------------------------- files under the wrong name
def test_a_labels_file_under_an_images_name_is_named(mnist_dir: Path, tmp_path: Path) -> None:
    folder = _copy_mnist(mnist_dir, tmp_path)
    shutil.copy(folder / "t10k-labels-idx1-ubyte.gz", folder / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz holds a 1-dimensional IDX array.*labels file"
                                          r".*expected 3 dimensions \(images\)"):  # fmt: skip
        load_mnist(folder, "test")


def test_a_truncated_idx_header_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big"))  # 3 dimensions declared, 1 given
    with pytest.raises(ValueError, match=r"x\.idx is truncated or corrupt: its header ends early"):
        read_idx(path)


# ---------------------------------------------------------------------------------------- YAML syntax errors
BROKEN_YAML = "model:\n  beta: [1, 2\ntrainer:\n  max_steps: 1\n"


def test_a_yaml_syntax_error_names_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from lightning_vae.cli import main

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_YAML)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(broken)])
    assert "broken.yaml" in str(exit_info.value.code) and "line 3, column" in str(exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["reconstruct", "--ckpt_path", str(tmp_path / "none.ckpt"), "--config", str(broken)])
    # a missing checkpoint is reported first; with one, the config is read
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1, limit_val_batches=0))
    trainer.fit(tiny_vae(), datamodule=TensorDataModule(torch.rand(8, 1, 8, 8).round(), batch_size=4))
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        generate_main(["reconstruct", "--ckpt_path", str(tmp_path / "model.ckpt"), "--config", str(broken)])
    err = capsys.readouterr().err
    assert "broken.yaml" in err and "not valid YAML" in err and "line 3" in err


def test_a_yaml_syntax_error_in_a_hydra_config_names_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_vae import configs as shipped
    from lightning_vae.cli.hydra import main as hydra_main

    folder = shipped.copy_to(tmp_path / "configs")
    (folder / "model" / "encoder" / "broken.yaml").write_text("_target_: [lightning_vae.nets.MLPEncoder\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_VAE_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["lightning-vae-hydra", "--config-dir", str(folder), "model/encoder=broken"])
    with pytest.raises(SystemExit) as exit_info:
        hydra_main()
    message = str(exit_info.value.code)
    assert "broken" in message and "\n" not in message
