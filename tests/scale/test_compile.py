"""torch.compile of the encoder and decoder: compiled in ``configure_model`` in every process (also ``ddp_spawn``
workers, where pickling drops a compiled call), same numbers as eager, checkpoints load into eager networks."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from support.modules import DestroyProcessGroupAtExit, tiny_vae, trainer_kwargs

from lightning_vae import VAE
from lightning_vae.data import TensorDataModule

#: Graphs the counting backend compiled and calls of the compiled code, in this process.
COMPILED = {"graphs": 0, "runs": 0}
BACKEND = "lightning_vae_counting"


def _counting(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    """A torch.compile backend that runs the captured graph as is and counts graphs and calls."""
    COMPILED["graphs"] += 1

    def run(*args: Any) -> Any:
        COMPILED["runs"] += 1
        return gm.forward(*args)

    return run


if BACKEND not in torch._dynamo.list_backends(exclude_tags=()):
    torch._dynamo.register_backend(compiler_fn=_counting, name=BACKEND)


def _reset() -> None:
    torch._dynamo.reset()
    COMPILED.update(graphs=0, runs=0)


def _is_compiled(vae: VAE) -> bool:
    return all(getattr(net, "_compiled_call_impl", None) is not None for net in (vae.encoder, vae.decoder))


def test_compiled_networks_match_eager_and_train(tmp_path: Path) -> None:
    eager = tiny_vae()
    compiled = tiny_vae(compile=True)
    compiled.load_state_dict(eager.state_dict())  # same parameter names: compiled in place
    compiled.configure_model()  # what the Trainer does; without it the networks run eagerly
    assert _is_compiled(compiled)
    x, z = torch.rand(8, 1, 8, 8).round(), torch.randn(8, 4)
    torch.testing.assert_close(compiled.encode(x).mean, eager.encode(x).mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled.decode(z), eager.decode(z), rtol=1e-5, atol=1e-5)

    dm = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=16)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(compiled, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    reloaded = VAE.load_from_checkpoint(path, compile=False)
    torch.testing.assert_close(reloaded.decode(z), compiled.decode(z), rtol=1e-5, atol=1e-5)


def test_configure_model_compiles_once_and_again_after_pickling() -> None:
    vae = tiny_vae(compile={"backend": BACKEND})
    assert not _is_compiled(vae)  # nothing before the Trainer's hook
    vae.configure_model()
    compiled_call = vae.encoder._compiled_call_impl
    vae.configure_model()  # idempotent: Lightning calls it for every fit/validate/test/predict
    assert vae.encoder._compiled_call_impl is compiled_call
    clone = pickle.loads(pickle.dumps(vae))  # what ddp_spawn does to the module
    assert not _is_compiled(clone)
    clone.configure_model()
    assert _is_compiled(clone)
    assert list(clone.state_dict()) == list(tiny_vae().state_dict())  # plain parameter names
    with pytest.raises(TypeError, match="compile"):
        tiny_vae(compile="yes")


def test_compile_true_runs_compiled_code_in_training(tmp_path: Path) -> None:
    _reset()
    vae = tiny_vae(compile={"backend": BACKEND})
    dm = TensorDataModule(torch.rand(48, 1, 8, 8).round(), batch_size=8)
    Trainer(**trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=4, limit_val_batches=0)).fit(vae, dm)
    assert COMPILED["graphs"] >= 2  # encoder and decoder (graph breaks may add more)
    assert COMPILED["runs"] >= 2 * 4  # both networks ran compiled at every step


class _ReportCompiled(Callback):
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        report = {**COMPILED, "compiled": _is_compiled(pl_module)}
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def test_compile_under_ddp_spawn_runs_compiled_code_in_every_worker(tmp_path: Path) -> None:
    vae = tiny_vae(compile={"backend": BACKEND})
    dm = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=8)
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0, devices=2),
        strategy="ddp_spawn",
        callbacks=[_ReportCompiled(str(tmp_path)), DestroyProcessGroupAtExit()],
    )
    trainer.fit(vae, datamodule=dm)
    for rank in range(2):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["compiled"], report
        assert report["graphs"] >= 2 and report["runs"] >= 2 * 3, report
