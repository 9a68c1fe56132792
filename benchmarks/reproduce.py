"""Reproduce published MNIST test likelihoods with the package's ``VAE``, ``MNISTDataModule`` and IW-NLL metric.

Each experiment follows one paper's protocol (architecture, activation, latent size, optimiser and its settings,
learning-rate schedule, batch size, epochs, binarisation, model selection) and is evaluated the same way for every
row: the importance-weighted NLL (``lightning_vae.metrics.ImportanceWeightedNLL``) with k = 5000 on the 10,000 MNIST
test images, binarised once with a fixed seed. Where the published figure used another estimator (pythae: k = 200,
mean of 5 rounds), that estimate is computed as well and compared with it.

Usage::

    python benchmarks/reproduce.py --list
    python benchmarks/reproduce.py burda_vae_1l                    # the full protocol (resumes if interrupted)
    python benchmarks/reproduce.py burda_vae_1l --budget 7200      # train for at most 2 h this time, then evaluate
    python benchmarks/reproduce.py burda_vae_1l --epochs 100       # stop at epoch 100 of the paper's 3280
    python benchmarks/reproduce.py burda_vae_1l --eval-only        # evaluate the run's last checkpoint, ship it
    python benchmarks/reproduce.py burda_vae_1l --export-only      # copy the resume checkpoint into the repository
    python benchmarks/reproduce.py burda_vae_1l --eval-only --weights benchmarks/weights/burda_vae_1l.safetensors
    python benchmarks/reproduce.py burda_vae_1l --eval-only --weights ... --k 1000 --test-size 1000   # quick
    python benchmarks/reproduce.py burda_vae_1l --smoke            # a few steps, k = 10 on 100 test images (CI)

A run keeps its checkpoints in ``benchmarks/runs/<experiment>/`` (``last.ckpt`` after every epoch, written by
Lightning's ``ModelCheckpoint``); running the same command again resumes from ``last.ckpt`` with Lightning's
``ckpt_path`` (optimiser, learning-rate schedule, epoch counter, callbacks' states), so a long run can be stopped
(``--budget``, ``--epochs``, or a kill) and continued later. ``--fresh`` starts over.

What survives a change of machine is kept in the repository: ``benchmarks/checkpoints/<experiment>/resume.pt`` (the
checkpoint without its pickled hyperparameters: weights, optimiser, schedule, loops, callbacks), written at the end
of every training invocation, by every evaluation from the run folder and by ``--export-only``; a training
invocation without a run folder (a fresh clone) starts from it. Every evaluation from the run folder also writes the
evaluated weights to ``benchmarks/weights/<experiment>.safetensors`` with a JSON config beside them (epochs, the
epoch of the weights, the history, the SHA-256, which the results entry repeats); ``--eval-only --weights FILE``
evaluates such a file without any checkpoint (``pip install safetensors``, the package's ``weights`` extra).

Results go to ``benchmarks/reproduction_results.json`` (one entry per experiment) and a figure of test NLL against
epoch per experiment to ``benchmarks/figures/reproduction_<experiment>.png`` (needs matplotlib: a benchmark-only
dependency, not one of the package). ``--smoke`` writes under ``benchmarks/runs/smoke/`` instead.

The two-stochastic-layer rows of Burda et al. (``burda_vae_2l``, ``burda_iwae_2l_k50``) train the package's
``StackedVAEModel`` (the paper's 784-200-200-100 / 100-100-50 tanh network) under the same protocol; their test NLL
is the importance-weighted estimate over both latent layers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import Tensor, nn

from lightning_vae import VAE
from lightning_vae.callbacks import KLAnnealing
from lightning_vae.checkpoints import load_checkpoint, migrate_state_dict
from lightning_vae.data import MNISTDataModule
from lightning_vae.distributions import VampPrior
from lightning_vae.metrics import ImportanceWeightedNLL
from lightning_vae.models import StackedVAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST_DIR = os.environ.get(
    "LIGHTNING_VAE_MNIST_DIR", os.environ.get("MNIST_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))
)
#: Checkpoint folders of the runs; $LIGHTNING_VAE_RUNS_DIR puts them outside the checkout (a run that lasts
#: longer than one checkout then survives a fresh clone).
RUNS_DIR = Path(os.environ.get("LIGHTNING_VAE_RUNS_DIR", str(ROOT / "benchmarks" / "runs")))
RESULTS_PATH = ROOT / "benchmarks" / "reproduction_results.json"
#: Shipped final weights of every reported row (safetensors + a small JSON config), part of the repository.
WEIGHTS_DIR = ROOT / "benchmarks" / "weights"
#: Resume checkpoints kept in the repository (weights, optimiser, schedule, loop and callback states; no pickled
#: code: they load with ``torch.load(weights_only=True)``), so a long run survives a change of machine.
CHECKPOINTS_DIR = ROOT / "benchmarks" / "checkpoints"
#: Keys of a Lightning checkpoint a resume needs; the rest (``hyper_parameters``: callables) is left out.
RESUME_KEYS = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "loops",
    "callbacks",
    "optimizer_states",
    "lr_schedulers",
)
FIGURES_DIR = ROOT / "benchmarks" / "figures"
#: Seed of the evaluation's importance samples (the test images are binarised by the data module's own seed).
EVAL_SEED = 1234


# ---------------------------------------------------------------------------------------------------- networks
def _glorot_tanh_init(module: nn.Module) -> None:
    """Glorot & Bengio (2010) uniform weights for tanh layers, zero biases (the IWAE reference code's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _he_init(module: nn.Module) -> None:
    """Weights ~ N(0, 2 / fan_in), biases left at PyTorch's default (the VampPrior reference code's ``he_init``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_features))


class GatedDense(nn.Module):
    """``h(x) * sigmoid(g(x))`` with two linear maps (Dauphin et al. 2017), the VampPrior paper's hidden layer."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.h, self.g = nn.Linear(n_in, n_out), nn.Linear(n_in, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedEncoder(nn.Module):
    """784-300-300 gated MLP to ``(loc, log_var)``; ``log_var`` through hardtanh(-6, 2) as in the VampPrior code."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 40, hidden: int = 300) -> None:
        super().__init__()
        self.input_shape, self.latent_dim = tuple(input_shape), latent_dim
        self.body = nn.Sequential(GatedDense(math.prod(self.input_shape), hidden), GatedDense(hidden, hidden))
        self.loc, self.log_var = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)
        _he_init(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x.flatten(1))
        return self.loc(h), nn.functional.hardtanh(self.log_var(h), -6.0, 2.0)


class GatedDecoder(nn.Module):
    """40-300-300 gated MLP to Bernoulli logits of shape ``(..., 1, 28, 28)``."""

    def __init__(self, latent_dim: int = 40, output_shape: Sequence[int] = (1, 28, 28), hidden: int = 300) -> None:
        super().__init__()
        self.output_shape = tuple(output_shape)
        self.body = nn.Sequential(GatedDense(latent_dim, hidden), GatedDense(hidden, hidden))
        self.head = nn.Linear(hidden, math.prod(self.output_shape))
        _he_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.body(z)).view(*z.shape[:-1], *self.output_shape)


class FusedAdam(Callback):
    """Runs every Adam optimizer of the run with torch's fused implementation (the same update, one kernel).

    On a CPU the default (one small operation per parameter and moment) costs ~1.2 ms per step for the Burda MLP,
    the fused one ~0.5 ms: a tenth of a batch-20 step. Set at the start of training, after Lightning restores
    the optimizer from a checkpoint (its saved settings would otherwise bring the default back on resume). The
    updates agree with the default to float32 rounding (1.2e-7 after 300 steps, tested).
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for optimizer in trainer.optimizers:
            if isinstance(optimizer, torch.optim.Adam) and use_fused(optimizer):
                for group in optimizer.param_groups:
                    group["fused"], group["foreach"] = True, False


def use_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter is a floating-point tensor on a device with a fused Adam (CPU or CUDA)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


class AdamNormGrad(torch.optim.Adam):
    """Adam on gradients divided by their L2 norm per parameter tensor (the VampPrior code's ``AdamNormGrad``)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(p.grad.norm(2) + 1e-7)
        super().step()
        return loss


# ---------------------------------------------------------------------------------------------------- schedules
#: Burda et al. (2015): 3^i passes at learning rate 0.001 * 10^(-i/7), i = 0..7 (3280 passes in all).
BURDA_STAGES = tuple((3**i, 10 ** (-i / 7)) for i in range(8))


def burda_lr_factor(epoch: int) -> float:
    """Factor on the base learning rate 1e-3 for 0-based ``epoch`` (the last stage's factor after epoch 3280)."""
    start = 0
    for length, factor in BURDA_STAGES:
        if epoch < start + length:
            return factor
        start += length
    return BURDA_STAGES[-1][1]


def burda_stage_ends() -> list[int]:
    """Epochs (1-based) that end a stage of the Burda schedule: 1, 4, 13, 40, 121, 364, 1093, 3280."""
    ends, total = [], 0
    for length, _ in BURDA_STAGES:
        total += length
        ends.append(total)
    return ends


# ---------------------------------------------------------------------------------------------------- experiments
@dataclasses.dataclass(frozen=True)
class Experiment:
    """One published result and the protocol that produced it.

    Attributes:
        name: Registry key.
        published: Published test NLL in nats for the same data (``None`` where that figure could not be read).
        published_estimator: How the published figure was estimated (k, rounds).
        source: Where the figure and the protocol come from.
        protocol: The protocol as followed here, and where it departs from the source.
        epochs: The protocol's number of epochs.
        batch_size: Training batch size.
        binarize: ``"dynamic"`` or ``"static"`` binarisation of the training images.
        val_size: Training images held out for validation.
        build: Builds the ``VAE`` given the training-set pixel means ``(1, 28, 28)``.
        select: ``"last"`` (evaluate the last epoch) or ``"best"`` (the epoch with the best validation ELBO).
        early_stopping: Patience in epochs on the validation ELBO, or ``None``.
        warmup_epochs: Linear KL warm-up over this many epochs (β = epoch / warmup_epochs, epochs from 1), or 0.
        eval_every: Default epochs between intermediate test evaluations.
        eval_epochs: Further epochs (1-based) evaluated in passing, e.g. the ends of the schedule's stages.
        comparable: ``(k, rounds)`` of the published estimator when it differs from k = 5000 once, else ``None``.
    """

    name: str
    published: float | None
    published_estimator: str
    source: str
    protocol: str
    epochs: int
    batch_size: int
    binarize: str
    val_size: int
    build: Callable[[Tensor], VAE]
    select: str = "last"
    early_stopping: int | None = None
    warmup_epochs: int = 0
    eval_every: int = 100
    eval_epochs: tuple[int, ...] = ()
    comparable: tuple[int, int] | None = None
    reference: dict[str, Any] = dataclasses.field(default_factory=dict)


def _build_burda(train_mean: Tensor, n_samples: int) -> VAE:
    encoder = MLPEncoder((1, 28, 28), latent_dim=50, hidden_sizes=(200, 200), activation="tanh")
    decoder = MLPDecoder(50, (1, 28, 28), hidden_sizes=(200, 200), activation="tanh")
    _glorot_tanh_init(encoder)
    _glorot_tanh_init(decoder)
    with torch.no_grad():  # output bias at the logit of the training pixel means, clipped to [0.001, 0.999]
        p = train_mean.flatten().clamp(0.001, 0.999)
        decoder.head.bias.copy_(torch.log(p) - torch.log1p(-p))
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999), eps=1e-4)
    scheduler = functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=burda_lr_factor)
    return VAE(
        encoder, decoder, likelihood="bernoulli", n_samples=n_samples, optimizer=optimizer, lr_scheduler=scheduler
    )


def _build_burda_2l(train_mean: Tensor, n_samples: int) -> VAE:
    model = StackedVAEModel((1, 28, 28), latent_sizes=(100, 50), hidden_sizes=((200, 200), (100, 100)))
    _glorot_tanh_init(model)
    with torch.no_grad():  # output bias at the logit of the training pixel means, clipped to [0.001, 0.999]
        p = train_mean.flatten().clamp(0.001, 0.999)
        model.decoder[-1].bias.copy_(torch.log(p) - torch.log1p(-p))
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999), eps=1e-4)
    scheduler = functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=burda_lr_factor)
    return VAE(model=model, n_samples=n_samples, optimizer=optimizer, lr_scheduler=scheduler)


def _build_vamp(train_mean: Tensor) -> VAE:
    optimizer = functools.partial(AdamNormGrad, lr=5e-4)
    # As the paper's code builds it: pseudo-inputs u ~ N(0.05, 0.01), seen by the encoder as hardtanh(u, 0, 1).
    prior = VampPrior(
        (1, 28, 28), 500, latent_dim=40, pseudo_input_activation="hardtanh", init_mean=0.05, init_std=0.01
    )
    return VAE(GatedEncoder(), GatedDecoder(), likelihood="bernoulli", prior=prior, optimizer=optimizer)


_BURDA_SOURCE = (
    "Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016 (arXiv:1509.00519), Table 1, "
    "MNIST, one stochastic layer; protocol from Section 5 and the reference code github.com/yburda/iwae "
    "(experiments.py, iwae.py, datasets.py, nnet.py)"
)
_BURDA_PROTOCOL = (
    "MNIST dynamically binarised per batch; 59,600 training images (400 held out, as in the reference code; here a "
    "random 400); encoder 784-200-200 tanh -> Gaussian (loc, log-variance) of 50, decoder 50-200-200 tanh -> "
    "784 Bernoulli logits; Glorot-uniform weights, zero biases, decoder output bias at the logit of the training "
    "pixel means (clipped to [0.001, 0.999]); {objective}; Adam beta1=0.9 beta2=0.999 eps=1e-4 (paper), batch 20, "
    "3^i epochs at lr 0.001*10^(-i/7) for i = 0..7 (3280 epochs), lr stepped per epoch; last epoch evaluated. "
    "Departures: the reference code's Adam uses beta1=0.99, second moments initialised at 1 and lr rounded to two "
    "digits (7.2e-4 for 7.197e-4); it visits the training images in a fixed order, here shuffled every epoch; its "
    "encoder outputs sigma = exp(linear), here log-variance = linear (the same family); with k = 1 its bound uses a "
    "Monte Carlo KL, the package the closed-form KL (same expectation, lower variance)."
)


_BURDA_2L = (
    "two stochastic layers (StackedVAEModel): encoder 784-200-200 tanh -> Gaussian of 100 (z1), 100-100 tanh -> "
    "Gaussian of 50 (z2); decoder 50-100-100 tanh -> Gaussian of 100 (p(z1|z2)), 100-200-200 tanh -> 784 Bernoulli "
    "logits; test NLL by importance sampling over both layers"
)


def _burda(name: str, k: int, published: float, layers: int = 1) -> Experiment:
    objective = "ELBO, k = 1" if k == 1 else f"IWAE bound, k = {k}"
    protocol = _BURDA_PROTOCOL.format(objective=objective)
    if layers == 2:
        protocol = protocol.replace(
            "encoder 784-200-200 tanh -> Gaussian (loc, log-variance) of 50, decoder 50-200-200 tanh -> 784 Bernoulli "
            "logits",
            _BURDA_2L,
        )
    reference = {
        "paper": "Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016 (arXiv:1509.00519)",
        "table": "Table 1",
        "row": f"MNIST, {'one stochastic layer' if layers == 1 else 'two stochastic layers'}, "
        f"{'VAE' if k == 1 else 'IWAE'}, k = {k}",
        "column": "NLL (k = 5000 importance samples)",
        "value": published,
        "data": "MNIST binarised dynamically (as this row trains; the reference code samples the pixels anew)",
    }
    return Experiment(
        name=name,
        published=published,
        published_estimator="k = 5000 on the 10,000 test images",
        reference=reference,
        source=_BURDA_SOURCE.replace("one stochastic layer", "two stochastic layers") if layers == 2 else _BURDA_SOURCE,
        protocol=protocol,
        epochs=sum(length for length, _ in BURDA_STAGES),
        batch_size=20,
        binarize="dynamic",
        val_size=400,
        build=functools.partial(_build_burda if layers == 1 else _build_burda_2l, n_samples=k),
        eval_every=100,
        eval_epochs=tuple(burda_stage_ends()),
    )


EXPERIMENTS: dict[str, Experiment] = {
    "burda_vae_1l": _burda("burda_vae_1l", 1, 86.76),
    "burda_iwae_1l_k5": _burda("burda_iwae_1l_k5", 5, 85.54),
    "burda_iwae_1l_k50": _burda("burda_iwae_1l_k50", 50, 84.78),
    "burda_vae_2l": _burda("burda_vae_2l", 1, 85.33, layers=2),
    "burda_iwae_2l_k50": _burda("burda_iwae_2l_k50", 50, 82.90, layers=2),
    "vamp_k500": Experiment(
        name="vamp_k500",
        # 85.57 is the figure of the same row for *static* MNIST (Larochelle's fixed binarisation; pythae's
        # reproduction table uses it for that data). The dynamic-MNIST column of the row could not be read here.
        published=None,
        published_estimator="k = 5000 on the 10,000 test images (the paper's code: S = 5000, MB = 100)",
        reference={
            "paper": "Tomczak & Welling, VAE with a VampPrior, AISTATS 2018 (arXiv:1705.07120)",
            "table": None,  # not read here: the table holding the dynamic-MNIST figure is unknown
            "row": "VAE (L = 1) + VampPrior",
            "column": "dynamic MNIST",
            "value": None,
            "data": "MNIST binarised dynamically (the paper's code: dataset_name='dynamic_mnist')",
            "not_this_data": {
                "column": "static MNIST",
                "value": 85.57,
                "cited_by": "pythae's reproduction table (clementchadebec/benchmark_VAE, "
                "examples/scripts/reproducibility/README.md: 'VAMP (K=500) | Binary MNIST | NLL (5000 IS) | 85.79 "
                "| 85.57', 'reproduces the results of Table 1 in [1]'), for Larochelle's static binarisation",
                "why_not": "Larochelle's fixed binarisation (the paper's code reads it from binarized_mnist_*.amat), "
                "not the data this row trains and tests on; the first round compared against it by mistake",
            },
            "note": "The paper's dynamic-MNIST figure of this row, and the number of the table holding it, were not "
            "readable on the machine these results were made on (no copy of the paper's tables was reachable); the "
            "row reports its own figure and epochs only.",
        },
        source=(
            "Tomczak & Welling, VAE with a VampPrior, AISTATS 2018 (arXiv:1705.07120), dynamic MNIST, VAE "
            "(L = 1) + VampPrior (the figure not read here); protocol from the reference code "
            "github.com/jmtomczak/vae_vampprior (experiment.py defaults, models/Model.py, models/VAE.py, "
            "utils/training.py, utils/perform_experiment.py, utils/load_data.py)"
        ),
        protocol=(
            "MNIST dynamically binarised per batch; 50,000 training images, 10,000 validation (binarised once); "
            "encoder 784-300-300 gated dense (h * sigmoid(g)) -> loc (linear), log-variance (hardtanh(-6, 2)) of 40, "
            "decoder 40-300-300 gated dense -> 784 Bernoulli logits; He-normal weights; VampPrior with K = 500 "
            "pseudo-inputs as the paper's code builds them: u ~ N(0.05, 0.01) (load_data.py sets these for MNIST), "
            "seen by the encoder through hardtanh(0, 1) (Model.add_pseudoinputs; the package's VampPrior with "
            "pseudo_input_activation='hardtanh'); KL warm-up beta = epoch / 100 over 100 epochs; AdamNormGrad (Adam "
            "on per-tensor normalised gradients) lr 5e-4, batch 100, up to 2000 epochs with early stopping after 50 "
            "epochs without a better validation ELBO; the best validation epoch is evaluated. Departures: the "
            "validation and test images are binarised with this package's seed, not numpy's 777; the held-out "
            "10,000 are a random 10,000, not the last."
        ),
        epochs=2000,
        batch_size=100,
        binarize="dynamic",
        val_size=10000,
        build=_build_vamp,
        select="best",
        early_stopping=50,
        warmup_epochs=100,
        eval_every=100,
    ),
}
#: Published rows the registry cannot run (none at present).
NOT_AVAILABLE: dict[str, tuple[float, str]] = {}


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate_nll(
    model: VAE,
    images: Tensor,
    k: int,
    *,
    batch_size: int = 100,
    chunk_size: int = 20_000,
    seed: int = EVAL_SEED,
    progress: bool = True,
    desc: str = "IW-NLL",
) -> dict[str, float]:
    """Importance-weighted test NLL of ``model`` on ``images`` with ``k`` samples, through ``ImportanceWeightedNLL``.

    Images are taken in batches of ``batch_size``; at most ``chunk_size`` (sample, image) pairs are decoded at once,
    so memory stays bounded for any ``k``. The importance samples are drawn from a generator seeded with ``seed``
    (the caller's random state is left untouched), so the estimate is reproducible on one machine.

    Returns:
        ``{"nll": mean nats, "stderr": standard error over batch means, "k", "n_images", "seconds"}``.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    metric = ImportanceWeightedNLL(n_samples=k, chunk_size=chunk_size)
    batch_means: list[float] = []
    start = time.perf_counter()
    device = model.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        batches = range(0, images.shape[0], batch_size)
        bar = tqdm(
            batches,
            desc=desc,
            unit="batch",
            disable=not progress,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            file=sys.stderr,
        )
        for i in bar:
            x = images[i : i + batch_size].to(device)
            before = float(metric.nll_sum)
            metric.update(model, x)
            batch_means.append((float(metric.nll_sum) - before) / x.shape[0])
            bar.set_postfix(nll=f"{float(metric.nll_sum / metric.total):.2f}", refresh=False)
    model.train(was_training)
    nll = float(metric.compute())
    if not math.isfinite(nll):
        raise FloatingPointError(f"The IW-NLL of the model is not finite ({nll}): the checkpoint or the run diverged")
    n = len(batch_means)
    spread = (sum((m - nll) ** 2 for m in batch_means) / (n - 1)) ** 0.5 / n**0.5 if n > 1 else float("nan")
    return {
        "nll": nll,
        "stderr": spread,
        "k": k,
        "n_images": int(images.shape[0]),
        "seconds": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------------------------------- callbacks
class ProgressLine(Callback):
    """One line per epoch: epoch, mean training loss, learning rate, β, epoch time and total training time.

    The total training time (summed over every resumed invocation) is kept in the checkpoint.
    """

    def __init__(self, total_epochs: int) -> None:
        self.total_epochs = total_epochs
        self.train_seconds = 0.0
        self.epoch_seconds: list[float] = []
        self._start = 0.0
        self._loss_sum: Tensor | None = None
        self._batches = 0
        self._lr = float("nan")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()
        self._loss_sum, self._batches = None, 0
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        loss = outputs["loss"].detach() if isinstance(outputs, dict) else outputs.detach()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._batches += 1

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        self.train_seconds += seconds
        self.epoch_seconds.append(seconds)
        loss = float(self._loss_sum) / max(self._batches, 1) if self._loss_sum is not None else float("nan")
        lr, beta = self._lr, getattr(pl_module, "beta", 1.0)
        total = datetime.timedelta(seconds=round(self.train_seconds))
        print(
            f"epoch {trainer.current_epoch + 1}/{self.total_epochs}  loss {loss:.3f}  lr {lr:.3g}  beta {beta:.3g}  "
            f"{seconds:.1f} s  (training {total})",
            flush=True,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))


class Budget(Callback):
    """Stop at the end of an epoch when another epoch would not fit in ``seconds`` of this invocation."""

    def __init__(self, seconds: float | None, started: float) -> None:
        self.seconds, self.started = seconds, started
        self._epoch_start = 0.0
        self.stopped = False

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.seconds is None:
            return
        now = time.perf_counter()
        if now - self.started + 1.1 * (now - self._epoch_start) > self.seconds:
            print(
                f"budget of {self.seconds:.0f} s reached after epoch {trainer.current_epoch + 1}: stopping", flush=True
            )
            self.stopped = True
            trainer.should_stop = True


class TestNLLHistory(Callback):
    """Evaluate the test IW-NLL with a small ``k`` at chosen epochs; the history is kept in the checkpoint.

    Runs after the epoch's checkpoint callbacks would see it (``on_train_epoch_end`` of a callback listed before the
    ``ModelCheckpoint``), so a resumed run has the points up to its last epoch.
    """

    def __init__(self, images: Tensor, k: int, every: int, epochs: Sequence[int], history_path: Path | None) -> None:
        self.images, self.k, self.every, self.epochs = images, k, every, set(epochs)
        self.history_path = history_path
        self.history: list[dict[str, float]] = []

    def due(self, epoch: int) -> bool:
        return epoch in self.epochs or (self.every > 0 and epoch % self.every == 0)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if not self.due(epoch) or any(p["epoch"] == epoch for p in self.history):
            return
        assert isinstance(pl_module, VAE)
        result = evaluate_nll(pl_module, self.images, self.k, progress=False)
        self.history.append({"epoch": epoch, **result})
        print(
            f"  test IW-NLL at epoch {epoch} (k = {self.k}, {result['n_images']} images): {result['nll']:.2f} nats "
            f"({result['seconds']:.0f} s)",
            flush=True,
        )
        if self.history_path is not None:
            self.history_path.write_text(json.dumps(self.history, indent=1))

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


class WarmupEarlyStopping(EarlyStopping):
    """Early stopping whose patience only counts after the KL warm-up (the VampPrior code resets it before)."""

    def __init__(self, warmup_epochs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warmup_epochs = warmup_epochs

    def _run_early_stopping_check(self, trainer: Trainer) -> None:
        super()._run_early_stopping_check(trainer)
        if trainer.current_epoch + 1 < self.warmup_epochs:
            self.wait_count, self.stopped_epoch = 0, 0
            trainer.should_stop = False


# ---------------------------------------------------------------------------------------------------- the run
def machine_description() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Whether subnormal floats were flushed to zero (a subnormal constant reads back as 0 when they are).
        "flush_denormal": bool(torch.tensor(1e-40).item() == 0.0),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    import lightning

    info["lightning"] = lightning.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _paths(args: argparse.Namespace, name: str) -> tuple[Path, Path, Path]:
    smoke_root = RUNS_DIR / "smoke"
    runs = Path(args.runs_dir) if args.runs_dir else (smoke_root if args.smoke else RUNS_DIR)
    results = Path(args.results) if args.results else (smoke_root / "results.json" if args.smoke else RESULTS_PATH)
    figures = Path(args.figures_dir) if args.figures_dir else (smoke_root if args.smoke else FIGURES_DIR)
    return runs / name, results, figures


def _shipped_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """Folders of the shipped weights and of the resume checkpoints (under the smoke folder for --smoke)."""
    smoke_root = RUNS_DIR / "smoke"
    weights = Path(args.weights_dir) if args.weights_dir else (smoke_root / "weights" if args.smoke else WEIGHTS_DIR)
    checkpoints = (
        Path(args.checkpoints_dir)
        if args.checkpoints_dir
        else (smoke_root / "checkpoints" if args.smoke else CHECKPOINTS_DIR)
    )
    return weights, checkpoints


def _data(exp: Experiment, args: argparse.Namespace) -> MNISTDataModule:
    dm = MNISTDataModule(
        data_dir=args.data_dir,
        batch_size=exp.batch_size,
        val_size=exp.val_size,
        binarize=exp.binarize,  # type: ignore[arg-type]
        seed=args.seed,
        train_subset=args.smoke_train if args.smoke else None,
    )
    dm.setup("fit")
    dm.setup("test")
    return dm


def _load_weights(model: VAE, path: Path) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    migrate_state_dict(checkpoint)  # weights written before the networks moved under `model.`
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint


# ---------------------------------------------------------------------------------------------------- shipped files
def sha256(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _relative(path: Path) -> str:
    return os.path.relpath(path, ROOT) if path.resolve().is_relative_to(ROOT) else str(path)


def save_weights(model: VAE, path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Write ``model``'s state dict as safetensors to ``path`` and ``config`` (plus the digest) beside it as JSON.

    Returns:
        ``{"path", "sha256", "bytes", "config"}`` for the results entry.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"experiment": str(config.get("experiment", ""))})
    tmp.chmod(0o644)
    os.replace(tmp, path)
    digest = sha256(path)
    config = {**config, "weights": path.name, "sha256": digest, "bytes": path.stat().st_size}
    path.with_suffix(".json").write_text(json.dumps(config, indent=1) + "\n")
    return {
        "path": _relative(path),
        "sha256": digest,
        "bytes": path.stat().st_size,
        "config": _relative(path.with_suffix(".json")),
    }


def load_weights_file(model: VAE, path: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Load shipped safetensors weights into ``model`` (strictly); return the JSON config written beside them.

    Raises:
        ValueError: If the file's digest differs from ``expected_sha256`` or from the one in its config.
    """
    from safetensors.torch import load_file

    config_path = path.with_suffix(".json")
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.exists() else {}
    digest = sha256(path)
    for expected in (expected_sha256, config.get("sha256")):
        if expected is not None and expected != digest:
            raise ValueError(f"Expected {path} to have SHA-256 {expected}, got {digest}: the file changed")
    model.load_state_dict(load_file(str(path)))
    return config


def save_resume(checkpoint: dict[str, Any], path: Path) -> None:
    """Write the parts of a Lightning checkpoint a resume needs (no pickled code) to ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: checkpoint[k] for k in RESUME_KEYS if k in checkpoint}, tmp)
    os.replace(tmp, path)


def adopt_committed_resume(committed: Path, last: Path) -> bool:
    """Copy the repository's resume checkpoint ``committed`` to the run folder's ``last`` when it is further on
    (or ``last`` is missing, e.g. on a new machine). Returns whether it was copied."""
    if not committed.exists():
        return False
    ahead = epochs_done(load_checkpoint(committed))
    if last.exists() and epochs_done(load_checkpoint(last)) >= ahead:
        return False
    last.parent.mkdir(parents=True, exist_ok=True)
    save_resume(load_checkpoint(committed), last)
    print(f"resuming from the repository's {_relative(committed)} (after epoch {ahead})", flush=True)
    return True


def export_resume(checkpoint: dict[str, Any], name: str, checkpoints_dir: Path) -> dict[str, Any]:
    """Write ``checkpoint``'s resume part to ``checkpoints_dir/name/resume.pt``; return the results entry's field."""
    resume = checkpoints_dir / name / "resume.pt"
    save_resume(checkpoint, resume)
    print(f"wrote {_relative(resume)} (after epoch {epochs_done(checkpoint)})", flush=True)
    return {"path": _relative(resume), "epochs_run": epochs_done(checkpoint)}


def ship_weights(
    exp: Experiment, model: VAE, last: dict[str, Any], epoch_of_weights: int, weights_dir: Path
) -> dict[str, Any]:
    """Write ``model``'s weights (the epoch about to be evaluated) with a config of the run ``last`` describes."""
    callbacks = last.get("callbacks", {})
    history = next((v.get("history", []) for k, v in callbacks.items() if k.startswith("TestNLLHistory")), [])
    seconds = next((v.get("train_seconds", 0.0) for k, v in callbacks.items() if k.startswith("ProgressLine")), 0.0)
    config = {
        "experiment": exp.name,
        "format": "safetensors state dict of lightning_vae.VAE as built by benchmarks/reproduce.py for this experiment",
        "epochs_run": epochs_done(last),
        "epochs_paper": exp.epochs,
        "selection": exp.select,
        "epoch_of_weights": epoch_of_weights,
        "train_seconds": round(float(seconds), 1),
        "history": history,
        "torch": torch.__version__,
    }
    weights = save_weights(model, weights_dir / f"{exp.name}.safetensors", config)
    print(f"wrote {weights['path']} (weights of epoch {epoch_of_weights})", flush=True)
    return weights


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Training epochs completed when ``checkpoint`` was written (Lightning's fit-loop progress)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint["epoch"])


def _update_results(path: Path, entry: dict[str, Any]) -> None:
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("experiments", {})[entry["experiment"]] = entry
    results["not_available"] = {
        name: {"published": value, "reason": reason} for name, (value, reason) in NOT_AVAILABLE.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def plot(entry: dict[str, Any], path: Path) -> Path | None:
    """Test NLL against epoch (intermediate points with their k, the final estimate), the published value as a line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib; a benchmark-only dependency)")
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    history = entry.get("history", [])
    if history:
        ks = sorted({p["k"] for p in history})
        for k in ks:
            pts = [p for p in history if p["k"] == k]
            ax.plot([p["epoch"] for p in pts], [p["nll"] for p in pts], "o-", ms=3, label=f"ours, k = {k}")
    ours = entry.get("ours")
    if ours:
        ax.plot(
            [entry["epoch_evaluated"]], [ours["nll"]], "r*", ms=12, label=f"ours, k = {ours['k']}: {ours['nll']:.2f}"
        )
    if entry["published"] is not None:
        ax.axhline(entry["published"], color="k", ls="--", lw=1, label=f"published: {entry['published']:.2f}")
    epochs = [p["epoch"] for p in history] + ([entry["epoch_evaluated"]] if ours else [])
    if epochs and max(epochs) / max(min(epochs), 1) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test NLL (nats)")
    published = [entry["published"]] if entry["published"] is not None else []
    values = [p["nll"] for p in history] + ([ours["nll"]] if ours else []) + published
    # The range of the later half of the run: the first epochs' much higher values run off the top.
    focus = [p["nll"] for p in history[len(history) // 2 :]] + ([ours["nll"]] if ours else []) + published
    low, high = min(values), max(focus)
    ax.set_ylim(low - 1.0, high + 0.15 * (high - low) + 1.0)
    ax.set_title(f"{entry['experiment']}: {entry['epochs_run']} of {entry['epochs_paper']} epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) and evaluate one experiment; return its results entry."""
    # Resuming writes into the run's own folder on purpose.
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty")
    started = time.perf_counter()
    exp = EXPERIMENTS[args.experiment]
    run_dir, results_path, figures_dir = _paths(args, exp.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    # Subnormal floats slow x86 CPUs by orders of magnitude in a matrix product (benchmarks/denormals.py); set
    # before the first tensor operation, so that every intra-op thread takes the mode. Values below 1.2e-38 only.
    torch.set_flush_denormal(not args.keep_denormals)
    seed_everything(args.seed, verbose=False)

    dm = _data(exp, args)
    assert dm.train_set is not None and dm.test_set is not None
    train_mean = dm.train_set.tensors[0].mean(0)
    test_images = dm.test_set.tensors[0]
    if args.smoke:
        test_images = test_images[: args.smoke_test]
    elif args.test_size is not None:
        test_images = test_images[: args.test_size]
    model = exp.build(train_mean)

    paper_epochs = exp.epochs
    target = min(args.epochs, paper_epochs) if args.epochs is not None else paper_epochs
    if args.smoke and args.epochs is None:
        target = 1
    eval_k = args.eval_k if args.eval_k is not None else (5 if args.smoke else 100)
    final_k = args.final_k if args.final_k is not None else (10 if args.smoke else 5000)
    eval_every = args.eval_every if args.eval_every is not None else exp.eval_every
    last = run_dir / "last.ckpt"
    best = run_dir / "best.ckpt"
    weights_dir, checkpoints_dir = _shipped_dirs(args)
    if args.fresh:
        for path in (last, best, run_dir / "history.json", *run_dir.glob("epoch=*.ckpt")):
            path.unlink(missing_ok=True)
    elif not args.weights:
        adopt_committed_resume(checkpoints_dir / exp.name / "resume.pt", last)
    if args.export_only:
        if not last.exists():
            raise FileNotFoundError(f"No checkpoint to export: {last} does not exist (train first)")
        resume_entry = export_resume(load_checkpoint(last), exp.name, checkpoints_dir)
        _, results_path, _ = _paths(args, exp.name)
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        if exp.name in results.get("experiments", {}):  # the row's figure stays; its resume file moved on
            entry = results["experiments"][exp.name]
            entry["resume_checkpoint"] = resume_entry
            _update_results(results_path, entry)
        return {"resume_checkpoint": resume_entry}

    progress = ProgressLine(paper_epochs)
    history = TestNLLHistory(
        test_images, eval_k, eval_every, exp.eval_epochs if not args.smoke else (1,), run_dir / "history.json"
    )
    budget = Budget(args.budget, started)
    stopped_early = False
    if not (args.eval_only or args.weights):
        callbacks: list[Callback] = [progress, history, budget, FusedAdam()]
        # Saved at the end of each training epoch, after validation and after the callbacks above (Lightning runs
        # checkpoint callbacks last), so the checkpoint holds this epoch's history point and training time.
        # `last.ckpt` is written only when a periodic checkpoint is (save_top_k=1 keeps the newest `epoch=N.ckpt`).
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir,
                filename="{epoch}",
                save_top_k=1,
                save_last=True,
                save_on_train_epoch_end=True,
                # A run folder moved since its last save (LIGHTNING_VAE_RUNS_DIR) would otherwise get last-v1.ckpt
                # beside a stale last.ckpt, which the next resume and --eval-only would read.
                enable_version_counter=False,
            )
        )
        if exp.select == "best":
            callbacks.append(
                ModelCheckpoint(
                    dirpath=run_dir,
                    filename="best",
                    monitor="val/elbo",
                    mode="max",
                    save_top_k=1,
                    enable_version_counter=False,
                    save_on_train_epoch_end=True,
                )
            )
        if exp.warmup_epochs:
            callbacks.append(
                KLAnnealing(
                    "linear",
                    start=1.0 / exp.warmup_epochs,
                    end=1.0,
                    length=exp.warmup_epochs - 1,
                    interval="epoch",
                    prog_bar=False,
                )
            )
        early: EarlyStopping | None = None
        if exp.early_stopping:
            early = WarmupEarlyStopping(exp.warmup_epochs, monitor="val/elbo", mode="max", patience=exp.early_stopping)
            callbacks.append(early)
        uses_val = exp.select == "best" or exp.early_stopping is not None
        trainer = Trainer(
            max_epochs=target,
            accelerator=args.accelerator,
            devices=1,
            logger=False,
            callbacks=callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=(2 if args.smoke else 1.0) if uses_val else 0,
            limit_train_batches=args.smoke_steps if args.smoke else 1.0,
            log_every_n_steps=50,
        )
        resume = last if last.exists() else None
        if resume is not None:
            done = epochs_done(load_checkpoint(resume))
            print(f"resuming from {resume} (after epoch {done})", flush=True)
            # A new random stream for the resumed part (shuffling, binarisation, samples), not a replay of the first.
            seed_everything(args.seed + done, verbose=False)
        print(
            f"{exp.name}: training to epoch {target} of the protocol's {paper_epochs} "
            f"(batch {exp.batch_size}, {torch.get_num_threads()} thread(s), budget "
            f"{'none' if args.budget is None else f'{args.budget:.0f} s'})",
            flush=True,
        )
        trainer.fit(model, datamodule=dm, ckpt_path=resume)
        stopped_early = bool(early is not None and early.stopped_epoch > 0)
        if not last.exists():
            raise RuntimeError(f"Training wrote no checkpoint to {last}")

    shipped: dict[str, Any] = {}
    if args.weights:
        # Shipped weights: no checkpoint, no training state; epochs and history come from the config beside them.
        evaluated = Path(args.weights)
        config = load_weights_file(model, evaluated)
        epochs_run = int(config.get("epochs_run", 0))
        epoch_evaluated = int(config.get("epoch_of_weights", epochs_run))
        history.history = list(config.get("history", []))
        progress.train_seconds = float(config.get("train_seconds", 0.0))
        shipped["weights"] = {
            "path": _relative(evaluated),
            "sha256": config.get("sha256", sha256(evaluated)),
            "bytes": evaluated.stat().st_size,
            "config": _relative(evaluated.with_suffix(".json")),
        }
        resume = checkpoints_dir / exp.name / "resume.pt"
        if resume.exists():
            shipped["resume_checkpoint"] = {
                "path": _relative(resume),
                "epochs_run": epochs_done(load_checkpoint(resume)),
            }
    else:
        # Evaluate the checkpoint the protocol selects (the last epoch, or the best validation epoch).
        if not last.exists():
            raise FileNotFoundError(
                f"No checkpoint to evaluate: {last} does not exist (train first, without --eval-only)"
            )
        # Each file is read once, so the weights shipped, evaluated and described are one epoch's, while a
        # training process may write the next epoch into the same folder.
        checkpoint = _load_weights(model, last)
        epochs_run = epochs_done(checkpoint)
        for key, state in checkpoint.get("callbacks", {}).items():
            if key.startswith("ProgressLine"):
                progress.load_state_dict(state)
            elif key.startswith("TestNLLHistory"):
                history.load_state_dict(state)
            elif key.startswith("WarmupEarlyStopping") and state.get("stopped_epoch", 0) > 0:
                stopped_early = True
        evaluated, epoch_evaluated = last, epochs_run
        if exp.select == "best" and best.exists():
            evaluated = best
            epoch_evaluated = epochs_done(_load_weights(model, best))
        if not args.no_export:
            shipped["resume_checkpoint"] = export_resume(checkpoint, exp.name, checkpoints_dir)
            if not args.no_eval:  # the weights shipped are the weights evaluated
                shipped["weights"] = ship_weights(exp, model, checkpoint, epoch_evaluated, weights_dir)
    model.to("cuda" if args.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")

    ours = None
    comparable = None
    if not args.no_eval:
        print(
            f"evaluating {evaluated.name} (epoch {epoch_evaluated}): IW-NLL, k = {final_k}, "
            f"{test_images.shape[0]} test images",
            flush=True,
        )
        ours = evaluate_nll(model, test_images, final_k, chunk_size=args.chunk_size, desc=f"k={final_k}")
        published = "not read" if exp.published is None else f"{exp.published:.2f}"
        print(
            f"RESULT {exp.name}: test NLL {ours['nll']:.4f} nats (k = {final_k}, {ours['n_images']} images, "
            f"standard error {ours['stderr']:.3f}, evaluation {ours['seconds']:.1f} s), published {published}",
            flush=True,
        )
        if exp.comparable is not None:
            k, rounds = exp.comparable
            if args.smoke:
                k, rounds = final_k, 2
            values = [
                evaluate_nll(model, test_images, k, seed=EVAL_SEED + r, chunk_size=args.chunk_size, desc=f"k={k}")[
                    "nll"
                ]
                for r in range(rounds)
            ]
            mean = sum(values) / rounds
            comparable = {"k": k, "rounds": rounds, "nll": mean, "values": values}
            print(
                f"RESULT {exp.name} with the published estimator: {mean:.4f} nats (k = {k}, mean of {rounds} rounds), "
                f"published {published}",
                flush=True,
            )

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *args.argv])
    entry: dict[str, Any] = {
        "experiment": exp.name,
        "published": exp.published,
        "published_estimator": exp.published_estimator,
        "reference": exp.reference,
        "source": exp.source,
        "protocol": exp.protocol,
        "ours": ours,
        "ours_published_estimator": comparable,
        "k": final_k,
        "test_size": int(test_images.shape[0]),
        "epochs_run": epochs_run,
        "epochs_paper": paper_epochs,
        "fraction_of_budget": round(epochs_run / paper_epochs, 4),
        "complete": epochs_run >= paper_epochs or stopped_early,
        "early_stopped": stopped_early,
        "selection": exp.select,
        "epoch_evaluated": epoch_evaluated,
        "checkpoint": _relative(evaluated),
        **shipped,
        "train_seconds": round(progress.train_seconds, 1),
        "seconds_per_epoch_last_invocation": (
            round(sum(progress.epoch_seconds) / len(progress.epoch_seconds), 2) if progress.epoch_seconds else None
        ),
        "eval_seconds": round(ours["seconds"], 1) if ours else None,
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
        "history": history.history,
        "history_k": history.k,
        "machine": machine_description(),
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "smoke": bool(args.smoke),
    }
    if args.no_eval:  # the results entry and its figure stay those of the last evaluation
        return entry
    figure = plot(entry, figures_dir / f"reproduction_{exp.name}.png")
    entry["figure"] = (
        None if figure is None else (os.path.relpath(figure, ROOT) if figure.is_relative_to(ROOT) else str(figure))
    )
    _update_results(results_path, entry)
    print(f"wrote {results_path}", flush=True)
    return entry


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Reproduce published MNIST test NLLs with lightning-vae (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("experiment", nargs="?", help=f"one of {', '.join(EXPERIMENTS)}")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--data-dir", default=DEFAULT_MNIST_DIR, help="folder of the MNIST IDX .gz files ($MNIST_DIR)")
    parser.add_argument("--epochs", type=int, help="stop at this epoch (counted from the run's start, across resumes)")
    parser.add_argument("--budget", type=float, help="seconds of this invocation; stops at an epoch end before it")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the run's checkpoint without training")
    parser.add_argument("--no-eval", action="store_true", help="train only; no final evaluation, no results entry")
    parser.add_argument("--fresh", action="store_true", help="delete the run's checkpoints and start over")
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from the results JSON entry")
    parser.add_argument("--smoke", action="store_true", help="a few steps, k = 10 on 100 test images (CI)")
    parser.add_argument("--smoke-steps", type=int, default=3, help="training steps of --smoke")
    parser.add_argument("--smoke-train", type=int, default=200, help="training images of --smoke")
    parser.add_argument("--smoke-test", type=int, default=100, help="test images of --smoke")
    parser.add_argument("--test-size", type=int, help="evaluate on the first N test images only (default all)")
    parser.add_argument("--final-k", "--k", type=int, help="importance samples of the final evaluation (default 5000)")
    parser.add_argument("--weights", help="evaluate these shipped safetensors weights (with --eval-only)")
    parser.add_argument("--export-only", action="store_true", help="write the run's resume file to the repository")
    parser.add_argument("--no-export", action="store_true", help="leave the repository's weights and resume file")
    parser.add_argument("--weights-dir", help=f"shipped weights (default {os.path.relpath(WEIGHTS_DIR, ROOT)})")
    parser.add_argument(
        "--checkpoints-dir", help=f"resume checkpoints kept in git (default {os.path.relpath(CHECKPOINTS_DIR, ROOT)})"
    )
    parser.add_argument("--eval-k", type=int, help="importance samples of the intermediate evaluations (default 100)")
    parser.add_argument("--eval-every", type=int, help="epochs between intermediate evaluations (0: only milestones)")
    parser.add_argument("--chunk-size", type=int, default=20_000, help="most (sample, image) pairs decoded at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--keep-denormals", action="store_true", help="compute with subnormal floats (slower; flushed to 0 by default)"
    )
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run, the data split and binarisation")
    parser.add_argument("--runs-dir", help=f"checkpoint folders (default {os.path.relpath(RUNS_DIR, ROOT)})")
    parser.add_argument("--results", help=f"results JSON (default {os.path.relpath(RESULTS_PATH, ROOT)})")
    parser.add_argument("--figures-dir", help=f"figure folder (default {os.path.relpath(FIGURES_DIR, ROOT)})")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.list:
        return args
    if args.experiment not in EXPERIMENTS:
        if args.experiment in NOT_AVAILABLE:
            parser.error(f"{args.experiment} is not available: it {NOT_AVAILABLE[args.experiment][1]}")
        parser.error(f"Expected an experiment, one of {', '.join(EXPERIMENTS)}; got {args.experiment!r}")
    for name in (
        "epochs",
        "final_k",
        "eval_k",
        "threads",
        "chunk_size",
        "smoke_steps",
        "smoke_train",
        "smoke_test",
        "test_size",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"Expected --{name.replace('_', '-')} to be >= 1, got {value}")
    if args.eval_every is not None and args.eval_every < 0:
        parser.error(f"Expected --eval-every to be >= 0, got {args.eval_every}")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        parser.error(f"Expected --budget to be a positive number of seconds, got {args.budget}")
    if args.eval_only and args.no_eval:
        parser.error("--eval-only and --no-eval exclude each other")
    if args.weights is not None and not args.eval_only:
        parser.error("--weights evaluates shipped weights: use it with --eval-only")
    if args.weights is not None and not Path(args.weights).is_file():
        parser.error(f"Expected --weights to be a safetensors file, got {args.weights!r}: no such file")
    if not (Path(args.data_dir) / "t10k-images-idx3-ubyte.gz").exists():
        parser.error(f"MNIST not found in {args.data_dir!r}: pass --data-dir or set MNIST_DIR")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.list:
        for exp in EXPERIMENTS.values():
            published = "  n/a " if exp.published is None else f"{exp.published:6.2f}"
            print(f"{exp.name:20s} published {published}  {exp.epochs} epochs, batch {exp.batch_size}")
        for name, (value, reason) in NOT_AVAILABLE.items():
            print(f"{name:20s} published {value:6.2f}  not available: {reason}")
        return None
    if args.plot_only:
        _, results_path, figures_dir = _paths(args, args.experiment)
        entries = json.loads(results_path.read_text()).get("experiments", {}) if results_path.exists() else {}
        if args.experiment not in entries:
            raise FileNotFoundError(f"No entry for {args.experiment} in {results_path}: run the experiment first")
        figure = plot(entries[args.experiment], figures_dir / f"reproduction_{args.experiment}.png")
        print(f"wrote {figure}")
        return entries[args.experiment]
    return run(args)


if __name__ == "__main__":
    main()
