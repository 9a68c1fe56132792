"""objective/m2.py: the M2 objective against a direct per-class loop written with torch.distributions, its one pass
for all classes, its weights and checks, evaluation on labelled batches, and DDP (two gloo processes)."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from lightning_vae.data import Batch
from lightning_vae.models import M2Model, VAEModel
from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder, MLPClassifier, MLPDecoder, MLPEncoder
from lightning_vae.objective import M2, enumerate_classes, unlabelled_bound
from lightning_vae.training.metrics import EvalMetrics

SHAPE, C, D = (1, 4, 4), 3, 2


def m2_model() -> M2Model:
    return M2Model(
        ConditionalMLPEncoder(SHAPE, C, D, (8,)),
        ConditionalMLPDecoder(D, C, SHAPE, (8,)),
        MLPClassifier(SHAPE, C, (8,)),
        n_classes=C,
    ).double()


def reference_parts(
    model: M2Model, x: Tensor, y: Tensor, eps: Tensor
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """-L(x, y) and -log q(y|x) of each labelled example and -U(x) of each unlabelled one, written out: a loop over
    the classes, one pass per class, torch.distributions for every density; ``eps`` are the standard normal draws of
    the rows in the objective's order (labelled, then class-major)."""
    known = (y >= 0).nonzero().squeeze(1).tolist()
    unknown = (y < 0).nonzero().squeeze(1).tolist()
    prior = Independent(Normal(torch.zeros(D, dtype=x.dtype), torch.ones(D, dtype=x.dtype)), 1)

    def neg_l(xi: Tensor, label: int, e: Tensor) -> Tensor:  # -L(x, y) of one example
        one_hot = torch.eye(C, dtype=x.dtype)[label].unsqueeze(0)
        loc, log_var = model.encoder(xi.unsqueeze(0), one_hot)
        q = Independent(Normal(loc[0], (0.5 * log_var[0]).exp()), 1)
        z = q.mean + q.stddev * e
        log_px = Independent(Bernoulli(logits=model.decoder(z.unsqueeze(0), one_hot)[0]), 3).log_prob(xi)
        return -(log_px + math.log(1.0 / C) - kl_divergence(q, prior))

    row = 0
    labelled, ce = [], []
    for i in known:
        labelled.append(neg_l(x[i], int(y[i]), eps[row]))
        ce.append(-Categorical(logits=model.classify(x[i : i + 1])[0]).log_prob(y[i]))
        row += 1
    unlabelled = []
    per_class = {i: [] for i in unknown}
    for c in range(C):  # class-major: every unlabelled example with class 0, then 1, ...
        for i in unknown:
            per_class[i].append(neg_l(x[i], c, eps[row]))
            row += 1
    for i in unknown:
        q_y = Categorical(logits=model.classify(x[i : i + 1])[0])
        unlabelled.append(sum(q_y.probs[c] * per_class[i][c] for c in range(C)) - q_y.entropy())
    return labelled, ce, unlabelled


def reference_loss(model: M2Model, x: Tensor, y: Tensor, eps: Tensor, alpha: float, p: float | None) -> Tensor:
    """J^alpha per example (the paper's eq. 9 divided by the number of training examples)."""
    labelled, ce, unlabelled = reference_parts(model, x, y, eps)
    n_l, n_u = len(labelled), len(unlabelled)
    frac = n_l / (n_l + n_u) if p is None else p
    loss = torch.zeros((), dtype=x.dtype)
    if n_l:
        loss = loss + frac * torch.stack(labelled).mean() + alpha * torch.stack(ce).mean()
    if n_u:
        loss = loss + (1 - frac) * torch.stack(unlabelled).mean()
    return loss


def draws(rows: int, seed: int) -> Tensor:
    """The standard normal draws a pass of ``rows`` rows makes from ``seed`` (what DiagonalGaussian.rsample draws)."""
    torch.manual_seed(seed)
    q = Independent(Normal(torch.zeros(rows, D, dtype=torch.float64), torch.ones(rows, D, dtype=torch.float64)), 1)
    return q.rsample((1,))[0]


@pytest.mark.parametrize("fraction", [None, 0.01])
@pytest.mark.parametrize("labels", [[2, -1, 0, -1, -1, 1], [-1, -1, -1], [0, 2, 1]], ids=["mixed", "none", "all"])
def test_the_loss_is_the_papers_objective_written_as_a_loop_over_classes(labels, fraction) -> None:
    model = m2_model()
    x = torch.bernoulli(torch.rand(len(labels), *SHAPE, dtype=torch.float64))
    y = torch.tensor(labels)
    objective = M2(alpha=0.7, labelled_fraction=fraction)
    n_rows = int((y >= 0).sum()) + C * int((y < 0).sum())
    torch.manual_seed(11)
    terms = objective.training_terms(model, Batch(x, y), report=True, check=True)
    expected = reference_loss(model, x, y, draws(n_rows, 11), 0.7, fraction)
    torch.testing.assert_close(terms.loss, expected, rtol=1e-10, atol=1e-10)
    # Gradients too: of every network, the classifier's included.
    grads = torch.autograd.grad(terms.loss, list(model.parameters()), allow_unused=True)
    reference = torch.autograd.grad(
        reference_loss(model, x, y, draws(n_rows, 11), 0.7, fraction), list(model.parameters()), allow_unused=True
    )
    for g, r in zip(grads, reference):
        if r is None:
            assert g is None or torch.count_nonzero(g) == 0
        else:
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)


def test_the_loss_on_a_proportional_batch_is_the_reference_codes_minibatch_objective() -> None:
    """github.com/dpkingma/nips14-ssl, learn_yz_x_ss.py, optim_vae_ss_adam (without its prior on the weights): a
    minibatch holds n_l / n_mb labelled and n_u / n_mb unlabelled examples, each labelled -log q(y|x) is weighted by
    beta = alpha * n_tot / n_l, and f = -(n_mb / n_tot) * (sum of L + beta * log q over the labelled + sum of U over the
    unlabelled). With labelled_fraction = n_l / n_tot the objective's loss is that f, the same alpha."""
    n_labelled, n_unlabelled, n_minibatches, alpha = 20, 80, 10, 0.1
    n_tot = n_labelled + n_unlabelled
    labels = [0, 1, -1, -1, -1, -1, -1, -1, -1, -1]  # 2 labelled + 8 unlabelled: one of the 10 minibatches
    model = m2_model()
    x = torch.bernoulli(torch.rand(len(labels), *SHAPE, dtype=torch.float64))
    y = torch.tensor(labels)
    n_rows = 2 + C * 8
    torch.manual_seed(5)
    loss = M2(alpha=alpha, labelled_fraction=n_labelled / n_tot).training_terms(model, Batch(x, y), False, False).loss
    neg_l, ce, neg_u = reference_parts(model, x, y, draws(n_rows, 5))
    beta = alpha * n_tot / n_labelled
    f = (n_minibatches / n_tot) * (sum(nl + beta * c for nl, c in zip(neg_l, ce)) + sum(neg_u))
    torch.testing.assert_close(loss, f, rtol=1e-10, atol=1e-10)


def test_unlabelled_bound_is_the_expectation_under_q_plus_its_entropy() -> None:
    neg_l = torch.randn(5, C, dtype=torch.float64)
    logits = torch.randn(5, C, dtype=torch.float64)
    q = Categorical(logits=logits)
    torch.testing.assert_close(unlabelled_bound(neg_l, logits), (q.probs * neg_l).sum(-1) - q.entropy())


def test_enumerate_classes_is_class_major() -> None:
    x = torch.arange(6.0).view(3, 2)
    rows, labels = enumerate_classes(x, 2)
    assert rows.tolist() == [*x.tolist(), *x.tolist()] and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_one_encoder_and_one_decoder_pass_per_step_whatever_the_classes() -> None:
    model = m2_model()
    calls = {"encoder": [], "decoder": [], "classifier": []}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda m, args, out, name=name: calls[name].append(args[0].shape[0]))
    y = torch.tensor([1, -1, -1, 0, -1])
    M2().training_terms(model, Batch(torch.rand(5, *SHAPE, dtype=torch.float64), y), report=False, check=False)
    assert calls == {"encoder": [2 + 3 * C], "decoder": [2 + 3 * C], "classifier": [5]}


def test_evaluation_on_a_labelled_batch_uses_the_pass_it_is_given() -> None:
    model = m2_model()
    x, y = torch.bernoulli(torch.rand(4, *SHAPE, dtype=torch.float64)), torch.tensor([0, 1, 2, 1])
    objective = M2(alpha=0.3, labelled_fraction=0.2)
    torch.manual_seed(5)
    out = model(x, 1, context=y)
    terms = objective(model, Batch(x, y), out, report=True)
    torch.testing.assert_close(terms.loss, reference_loss(model, x, y, draws(4, 5), 0.3, 0.2))
    logits = model.classify(x)
    assert float(terms.extra["accuracy"]) == float((logits.argmax(-1) == y).double().mean())
    torch.testing.assert_close(terms.extra["classification"], torch.nn.functional.cross_entropy(logits, y))
    assert terms.kl_per_dim is not None and terms.kl_per_dim.shape == (D,) and bool((terms.kl_per_dim >= 0).all())
    # A batch with unlabelled examples is evaluated by the objective's own pass.
    mixed = objective(model, Batch(x, torch.tensor([0, -1, 2, -1])), out, report=True)
    assert torch.isfinite(mixed.loss)


def test_arguments_and_models_are_checked() -> None:
    with pytest.raises(ValueError, match="Expected `alpha` to be a finite float >= 0"):
        M2(alpha=-1.0)
    with pytest.raises(ValueError, match="Expected `labelled_fraction`"):
        M2(labelled_fraction=1.5)
    with pytest.raises(ValueError, match="Expected `labelled_fraction`"):
        M2(labelled_fraction=0.0)
    with pytest.raises(TypeError, match="Expected `n_samples` to be"):
        M2(n_samples=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a conditional model with a classifier"):
        M2().check_model(VAEModel(MLPEncoder(SHAPE, latent_dim=2), MLPDecoder(2, SHAPE)))
    with pytest.raises(ValueError, match="needs the labels as the batch's context"):
        M2().training_terms(m2_model(), Batch(torch.rand(2, *SHAPE, dtype=torch.float64)), True, False)


# ---------------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, x: Tensor, y: Tensor, split: list[list[int]], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = m2_model()
        objective = M2(alpha=0.5, labelled_fraction=0.1)
        index = torch.tensor(split[rank])
        torch.manual_seed(100 + rank)
        loss = objective.training_terms(model, Batch(x[index], y[index]), report=True, check=False).loss
        grads = torch.autograd.grad(loss, list(model.parameters()))
        for g in grads:  # what DDP does: the mean of the ranks' gradients
            dist.all_reduce(g)
            g /= 2
        # The evaluation mean of `accuracy` over uneven shards (3 and 1 examples): a torchmetrics mean.
        metrics = EvalMetrics()
        shard = torch.tensor([[0, 1, 2], [3]][rank])
        labels = y[shard].clamp(min=0)
        terms = objective(model, Batch(x[shard], labels), model(x[shard], 1, context=labels), True)
        accuracy = metrics.update_extra("val", "accuracy", terms.extra["accuracy"], len(shard)).compute()
        torch.save({"grads": [g.clone() for g in grads], "accuracy": float(accuracy)}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_gradient_and_accuracy_of_one(tmp_path) -> None:
    """Each rank holds 1 labelled + 2 unlabelled examples: the mean of the ranks' gradients is the one-process gradient
    of the whole batch (the loss is a per-example mean); the accuracy over uneven shards equals one process's."""
    torch.manual_seed(1)
    x = torch.bernoulli(torch.rand(6, *SHAPE, dtype=torch.float64))
    y = torch.tensor([0, -1, -1, 2, -1, -1])
    split = [[0, 1, 2], [3, 4, 5]]
    mp.spawn(_worker, args=(_free_port(), x, y, split, str(tmp_path)), nprocs=2, join=True)
    out = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    torch.manual_seed(0)
    model = m2_model()
    objective = M2(alpha=0.5, labelled_fraction=0.1)
    # One process, the same draws: the rank-0 rows drawn with seed 100, the rank-1 rows with seed 101.
    losses = []
    for rank, seed in ((0, 100), (1, 101)):
        torch.manual_seed(seed)
        index = torch.tensor(split[rank])
        losses.append(objective.training_terms(model, Batch(x[index], y[index]), True, False).loss)
    # Both halves hold the same mix, so the mean of the two per-example means is the whole batch's mean.
    expected = torch.autograd.grad(sum(losses) / 2, list(model.parameters()))
    for g, e in zip(out[0]["grads"], expected):
        torch.testing.assert_close(g, e)
    labels = y.clamp(min=0)[:4]
    one = float((model.classify(x[:4]).argmax(-1) == labels).double().mean())
    assert out[0]["accuracy"] == out[1]["accuracy"] == pytest.approx(one)
