"""β-TCVAE (objective/beta_tcvae.py) against ``vae_quant.py`` of rtqichen/beta-tcvae re-implemented in NumPy float64,
the dataset size from the data, and one against two gloo processes."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch import Callback, Trainer
from support.modules import DestroyProcessGroupAtExit, tiny_vae, trainer_kwargs
from support.papers import vae_quant_modified_elbo
from torch.distributions import Bernoulli

from lightning_vae import VAE
from lightning_vae.callbacks import KLAnnealing
from lightning_vae.data import Batch, TensorDataModule
from lightning_vae.models import StackedVAEModel
from lightning_vae.objective import BetaTCVAE, RunFacts, model_pass


def _pass(objective: BetaTCVAE, n: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    model = tiny_vae().model.double()
    x = torch.rand(n, 1, 8, 8, dtype=torch.float64).round()
    out = model_pass(model, Batch(x), 1)
    return model, x, out, objective(model, Batch(x), out, report=True)


def _reference_loss(x, out, dataset_size, mss, beta, lamb, include_mutinfo):
    q = out.inference.posteriors["z"]
    zs, mu, logsigma = out.inference.z["z"][0], q.loc, 0.5 * q.log_var
    logpx = Bernoulli(logits=out.generative.params[0]).log_prob(x).flatten(1).sum(1)
    arrays = [t.detach().numpy() for t in (logpx, zs, mu, logsigma)]
    return -vae_quant_modified_elbo(*arrays, dataset_size, mss, beta, lamb, include_mutinfo).mean()


@pytest.mark.parametrize("estimator", ["mss", "mws"])
@pytest.mark.parametrize(("alpha", "beta", "gamma"), [(1.0, 6.0, 1.0), (0.0, 3.0, 0.5), (1.0, 1.0, 0.0)])
def test_the_loss_equals_vae_quant(estimator: str, alpha: float, beta: float, gamma: float) -> None:
    objective = BetaTCVAE(alpha=alpha, beta=beta, gamma=gamma, estimator=estimator)  # type: ignore[arg-type]
    objective.setup(RunFacts(dataset_size=5000))
    _, x, out, terms = _pass(objective)
    # vae_quant.py: lamb is 1 - gamma; alpha is 1 (include_mutinfo) or 0.
    reference = _reference_loss(x, out, 5000, estimator == "mss", beta, 1.0 - gamma, include_mutinfo=alpha == 1.0)
    assert terms.loss.item() == pytest.approx(reference, rel=1e-10)


def test_unit_weights_give_the_elbo_with_the_monte_carlo_kl_and_the_parts_sum_to_it() -> None:
    objective = BetaTCVAE(alpha=1.0, beta=1.0, gamma=1.0)
    objective.setup(RunFacts(dataset_size=100))
    model, x, out, terms = _pass(objective)
    q, z = out.inference.posteriors["z"], out.inference.z["z"]
    log_ratio = q.log_prob(z) - out.generative.priors["z"].log_prob(z)  # (1, B): the single-sample KL
    torch.testing.assert_close(terms.loss, terms.recon + log_ratio.mean(), rtol=1e-12, atol=1e-12)
    extra = terms.extra or {}
    parts = extra["mutual_info"] + extra["total_correlation"] + extra["dimension_kl"]
    torch.testing.assert_close(parts, log_ratio.mean().detach(), rtol=1e-12, atol=1e-12)
    # The reported KL is the closed form (what monitors read), not the batch estimate.
    closed = torch.distributions.kl_divergence(q, out.generative.priors["z"]).mean()
    torch.testing.assert_close(terms.kl, closed, rtol=1e-8, atol=1e-12)


def test_before_the_run_s_facts_the_batch_is_the_set_and_one_example_takes_mws() -> None:
    objective = BetaTCVAE(estimator="mss")
    _, x, out, terms = _pass(objective, n=8)  # no setup: N = B
    reference = _reference_loss(x, out, 8, True, 6.0, 0.0, True)
    assert terms.loss.item() == pytest.approx(reference, rel=1e-10)
    _, x, out, terms = _pass(objective, n=1)
    assert terms.loss.item() == pytest.approx(_reference_loss(x, out, 1, False, 6.0, 0.0, True), rel=1e-10)


def test_arguments_and_models_are_checked() -> None:
    with pytest.raises(ValueError, match="Expected `estimator` to be one of"):
        BetaTCVAE(estimator="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected `beta` to be a finite float >= 0"):
        BetaTCVAE(beta=-1.0)
    objective = BetaTCVAE()
    with pytest.raises(TypeError, match="Expected `gamma` to be a finite float"):
        objective.gamma = "1"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="training set's size"):
        objective.setup(RunFacts(dataset_size=None))
    stacked = StackedVAEModel((1, 8, 8), latent_sizes=(4, 2), hidden_sizes=((8,), (8,)))
    with pytest.raises(ValueError, match="one latent group for BetaTCVAE"):
        VAE(model=stacked, objective=objective)


class _Facts(Callback):
    def __init__(self, expected: RunFacts) -> None:
        self.expected = expected

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        assert pl_module.objective.facts == self.expected, pl_module.objective.facts


def _data() -> TensorDataModule:
    torch.manual_seed(0)
    return TensorDataModule(torch.rand(96, 1, 8, 8).round(), batch_size=16, val_fraction=1 / 3, seed=0)


def test_trains_with_the_dataset_size_from_the_data_and_anneals_and_resumes_its_weights(tmp_path: Path) -> None:
    vae = tiny_vae(objective="beta_tcvae")
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=None),
        callbacks=[_Facts(RunFacts(64, 1)), KLAnnealing("linear", start=1.0, end=4.0, length=3, weight="beta")],
        log_every_n_steps=1,
    )
    trainer.fit(vae, datamodule=_data())
    metrics = trainer.callback_metrics
    for key in ("train/mutual_info", "train/total_correlation", "train/dimension_kl", "val/total_correlation"):
        assert torch.isfinite(metrics[key]), key
    assert metrics["train/beta"] == 4.0 and vae.objective.facts.dataset_size == 64
    trainer.save_checkpoint(tmp_path / "tc.ckpt")
    reloaded = VAE.load_from_checkpoint(tmp_path / "tc.ckpt")
    assert isinstance(reloaded.objective, BetaTCVAE) and reloaded.objective.beta == 4.0


# ------------------------------------------------------------------ one process against two
WORLD, PER_RANK, DATASET = 2, 8, 640


def _shard_loss(model, x: torch.Tensor, rank: int, forward=None) -> torch.Tensor:
    objective = BetaTCVAE(beta=6.0)
    objective.setup(RunFacts(DATASET, WORLD))
    torch.manual_seed(100 + rank)  # each process's own reparameterisation noise
    shard = Batch(x[rank * PER_RANK : (rank + 1) * PER_RANK])
    out = model_pass(model, shard, 1) if forward is None else forward(shard.x)
    return objective(model, shard, out, report=False).loss


def _model_and_data():
    torch.manual_seed(0)
    return tiny_vae().model.double(), torch.rand(WORLD * PER_RANK, 1, 8, 8, dtype=torch.float64).round()


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model, x = _model_and_data()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        _shard_loss(model, x, rank, forward=lambda data: ddp(data, 1)).backward()  # DDP averages the gradients
        if rank == 0:
            torch.save({"grads": [p.grad for p in model.parameters()]}, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_average_the_one_process_estimators_of_their_own_batches(tmp_path: Path) -> None:
    """Each process's estimator reads its own batch with the whole set's N; DDP averages them: two gloo processes
    give the mean of one process's gradients on each batch (not the estimator of one batch of both)."""
    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    two = torch.load(out, weights_only=True)["grads"]
    model, x = _model_and_data()
    grads = [torch.autograd.grad(_shard_loss(model, x, r), list(model.parameters())) for r in range(WORLD)]
    for got, *per_rank in zip(two, *grads):
        torch.testing.assert_close(got, sum(per_rank) / WORLD, rtol=1e-10, atol=1e-12)
    # The estimator of the union batch differs: it weighs pairs across the two shards.
    objective = BetaTCVAE(beta=6.0)
    objective.setup(RunFacts(DATASET, 1))
    torch.manual_seed(100)
    union = objective(model, Batch(x), model_pass(model, Batch(x), 1), report=False).loss
    halves = (_shard_loss(model, x, 0) + _shard_loss(model, x, 1)) / 2
    assert not np.isclose(union.item(), halves.item())


def test_a_ddp_run_gives_every_process_the_whole_training_set_s_size(tmp_path: Path) -> None:
    trainer = Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, limit_val_batches=0, devices=2, strategy="ddp_spawn"),
        callbacks=[_Facts(RunFacts(64, 2)), DestroyProcessGroupAtExit()],
    )
    trainer.fit(tiny_vae(objective=BetaTCVAE()), datamodule=_data())
