"""Sharded strategies: FSDP (and other parameter sharding) over several processes is refused at setup, with
the advice to use DDP; one process, which shards nothing, and data parallelism are accepted.

Lightning builds FSDP on CUDA devices only, so on a CPU the check runs against a stand-in trainer holding
the strategy object; ``benchmarks/gpu_check.sh`` runs the real refusal where two GPUs are present.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from support.modules import tiny_vae

from lightning_vae.training.faults import refuse_sharding


def _setup(strategy: object, world_size: int) -> bool:
    """Run the module's setup under a stand-in trainer; ``True`` when it accepted the strategy."""
    vae = tiny_vae()
    vae._trainer = SimpleNamespace(strategy=strategy, world_size=world_size)  # type: ignore[assignment]
    try:
        vae.setup("fit")
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "strategy",
    [FSDPStrategy(), ModelParallelStrategy(), SimpleNamespace(zero_stage_3=True)],
    ids=["fsdp", "model_parallel", "deepspeed_stage_3"],
)
def test_sharding_over_several_processes_is_refused_with_the_advice_to_use_ddp(strategy: object) -> None:
    trainer = SimpleNamespace(strategy=strategy, world_size=2)
    with pytest.raises(ValueError, match=r"does not support sharded training .* with 2 processes.*strategy='ddp'"):
        refuse_sharding(trainer)
    assert not _setup(strategy, world_size=2)


def test_one_process_and_data_parallelism_are_accepted() -> None:
    assert _setup(FSDPStrategy(), world_size=1)  # FSDP on one process shards nothing
    assert _setup(DDPStrategy(), world_size=4)
    assert _setup(SimpleNamespace(zero_stage_3=False), world_size=2)
    vae = tiny_vae()
    vae.setup("fit")  # no trainer: nothing to check
    assert vae._trainer is None
