"""Compare the package's latent-variable models on dynamically binarised MNIST under one training and evaluation.

Models (``--models``, comma-separated; default every available one):

- ``vae_1l``: ``VAEModel``, encoder 784-200-200 tanh -> Gaussian of 50, decoder 50-200-200 tanh -> 784 Bernoulli
  logits (the one-stochastic-layer model of Burda et al. 2015);
- ``stacked_2l``: ``StackedVAEModel()`` defaults, Burda et al.'s two-stochastic-layer MNIST model (784-200-200 -> 100,
  100-100 -> 50, tanh, inferred bottom-up);
- ``ladder_3l``: ``LadderVAEModel`` with latent layers 64, 32, 16 and bottom-up blocks 512-512, 256-256, 128-128
  (leaky ReLU), the shipped ``configs/cli/mnist_ladder.yaml`` model;
- ``ladder_3l_warmup``: the ``ladder_3l`` model trained with a linear KL warm-up,
  ``lightning_vae.callbacks.KLAnnealing("linear", start=0.0, end=1.0, length=...)``: β rises from 0 to 1 over the
  optimizer steps of the first half of the epochs (10 of 20: 6,000 steps of batch 100), then stays at 1. Sønderby et
  al. (2016) warm up over 200 epochs; ours is shortened to fit the same 20-epoch budget as the other rows;
- ``vae_iaf``: ``FlowVAEModel(posterior="iaf")``: the ``vae_1l`` networks, the encoder's last hidden layer as the
  context h, two IAF steps over MADEs with one hidden layer of 200. Listed only when
  ``lightning_vae.models.FlowVAEModel`` exists.

Every model is trained the same way: ``VAE(model=...)`` under a Lightning ``Trainer``, the single-sample ELBO (no KL
warm-up, except ``ladder_3l_warmup``: β below 1 over the first half of the epochs), Adam lr 1e-3, eps 1e-4, batch
100, the same number of epochs, all 60,000 training images binarised anew per batch, the decoder's output bias
started at the logit of the training pixel means; the last epoch is evaluated (at β = 1 after any warm-up; the
IW-NLL, the ELBO and the active units below do not depend on β).
Evaluation is the same for all: the importance-weighted NLL (``lightning_vae.functional.nll.iw_nll``, every latent
group drawn from its posterior and scored in the joint) with ``--k`` samples (default 1000) on the MNIST test images
(all 10,000 unless ``--test-size``), binarised once with a fixed seed; the ELBO (mean of ``log p(x, z) - log q(z|x)``
over ``--elbo-samples`` samples); and the active units of each latent group (Burda et al.: the variance over the test
images of the posterior mean above 0.01). A group whose posterior depends on samples of other groups has as its mean
the average of its conditional mean over ``--mc-samples`` draws of those groups, and a posterior with no closed-form
mean (the IAF's) the average of as many samples; the sampling variance of such an average is subtracted from the
variance over the images. The count with the conditional mean given a single draw is recorded as well.

Usage::

    python benchmarks/models.py --smoke                          # seconds: 300 training images, k = 10 (CI)
    python benchmarks/models.py --epochs 5 --k 1000              # the benchmark (resumes if interrupted)
    python benchmarks/models.py --models vae_1l,ladder_3l --epochs 20 --budget 3600
    python benchmarks/models.py --plot-only                      # redraw the figure from the results JSON

Each model keeps its checkpoints in ``$LIGHTNING_VAE_RUNS_DIR/models/<model>/`` (default ``benchmarks/runs/``,
git-ignored): ``last.ckpt`` after every epoch (``ModelCheckpoint(save_last=True)``, ``ExactResume``: each step's
random draws are a function of the seed and the step, and writes are atomic), so running the same command again
resumes each model where it stopped; a model whose results entry matches its checkpoint and the evaluation settings
is not evaluated again (``--reevaluate`` forces it). ``--budget SECONDS`` splits the time evenly over the models left;
a model's training stops at an epoch end when another epoch and its evaluation (timed on a few test images first)
would not fit in its share. ``--fresh`` starts the selected models over.

Results go to ``benchmarks/models_results.json`` and the figure (test NLL per model beside the published figure,
active units per latent group) to ``benchmarks/models.png``; matplotlib is a benchmark-only dependency. The published
figures come from far longer training (Burda et al.: 3280 epochs) and, for the Ladder VAE and IAF rows, other
architectures and training tricks; each entry says how it differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import importlib.util
import json
import math
import os
import shlex
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn

from lightning_vae import VAE
from lightning_vae.callbacks import ExactResume, KLAnnealing
from lightning_vae.data import MNISTDataModule
from lightning_vae.distributions.posteriors import DiagonalGaussian
from lightning_vae.functional import posterior_mean_variance
from lightning_vae.functional.collapse import ACTIVITY_THRESHOLD
from lightning_vae.functional.nll import iw_nll
from lightning_vae.models import LadderVAEModel, LatentVariableModel, StackedVAEModel, VAEModel
from lightning_vae.nets import MLPDecoder, MLPEncoder


def _load_reproduce() -> ModuleType:
    """``benchmarks/reproduce.py`` (not a package): its paths, evaluation seed, callbacks and checkpoint helpers."""
    name = "lightning_vae_reproduce_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().with_name("reproduce.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


reproduce = _load_reproduce()
ROOT: Path = reproduce.ROOT
RESULTS_PATH = ROOT / "benchmarks" / "models_results.json"
FIGURE_PATH = ROOT / "benchmarks" / "models.png"

try:  # the IAF model joins the benchmark when the package has it
    from lightning_vae.models import FlowVAEModel
except ImportError:  # pragma: no cover - depends on the package version
    FlowVAEModel = None

#: Training settings shared by every model.
LR, ADAM_EPS, BATCH_SIZE = 1e-3, 1e-4, 100


# ---------------------------------------------------------------------------------------------------- models
class ContextMLPEncoder(nn.Module):
    """An MLP to ``(loc, log_var, h)``: the Gaussian's parameters and the last hidden layer as the IAF context ``h``."""

    def __init__(
        self, input_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 50, hidden_sizes: Sequence[int] = (200, 200)
    ) -> None:
        super().__init__()
        self.input_shape, self.latent_dim = tuple(input_shape), latent_dim
        layers: list[nn.Module] = []
        for n_in, n_out in zip([math.prod(self.input_shape), *hidden_sizes[:-1]], hidden_sizes):
            layers += [nn.Linear(n_in, n_out), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden_sizes[-1], 2 * latent_dim)
        self.context_dim = hidden_sizes[-1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.body(x.flatten(1))
        loc, log_var = self.head(h).chunk(2, dim=-1)
        return loc, log_var, h


def _build_vae_1l() -> LatentVariableModel:
    encoder = MLPEncoder((1, 28, 28), latent_dim=50, hidden_sizes=(200, 200), activation="tanh")
    decoder = MLPDecoder(50, (1, 28, 28), hidden_sizes=(200, 200), activation="tanh")
    return VAEModel(encoder, decoder, likelihood="bernoulli")


def _build_stacked_2l() -> LatentVariableModel:
    return StackedVAEModel()


def _build_ladder_3l() -> LatentVariableModel:
    return LadderVAEModel((1, 28, 28), latent_sizes=(64, 32, 16), hidden_sizes=((512, 512), (256, 256), (128, 128)))


def _build_vae_iaf() -> LatentVariableModel:
    assert FlowVAEModel is not None
    encoder = ContextMLPEncoder((1, 28, 28), latent_dim=50, hidden_sizes=(200, 200))
    decoder = MLPDecoder(50, (1, 28, 28), hidden_sizes=(200, 200), activation="tanh")
    return FlowVAEModel(
        encoder, decoder, posterior="iaf", n_flows=2, hidden_sizes=(200,), context_dim=encoder.context_dim
    )


@dataclasses.dataclass(frozen=True)
class Published:
    """A published MNIST test NLL to set beside ours, and how its setting differs."""

    nll: float
    source: str
    estimator: str
    epochs: str
    comparable: str


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One row of the benchmark."""

    name: str
    label: str
    architecture: str
    build: Callable[[], LatentVariableModel]
    published: Published
    #: Fraction of the epochs over which a linear KL warm-up raises β from 0 to 1 (``None``: β = 1 throughout).
    warmup_fraction: float | None = None


def warmup_steps(spec: ModelSpec, epochs: int, steps_per_epoch: int) -> int | None:
    """Optimizer steps of ``spec``'s KL warm-up in a run of ``epochs`` epochs (``None`` without warm-up).

    The ramp spans the steps of the first ``round(warmup_fraction * epochs)`` epochs, at least one epoch:

        >>> spec = ModelSpec("m", "m", "m", lambda: None, None, warmup_fraction=0.5)  # type: ignore[arg-type]
        >>> warmup_steps(spec, 20, 600), warmup_steps(spec, 1, 3)
        (6000, 3)
    """
    if spec.warmup_fraction is None:
        return None
    return max(1, round(spec.warmup_fraction * epochs)) * steps_per_epoch


_BURDA = "Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016 (arXiv:1509.00519), Table 1, MNIST"


def _sonderby(training: str) -> Published:
    """Sønderby et al.'s Ladder VAE figure, and how its training differs from a row's (``training``)."""
    return Published(
        81.84,
        "Sønderby, Raiko, Maaløe, Sønderby & Winther, Ladder Variational Autoencoders, NeurIPS 2016 "
        "(arXiv:1602.02282), Table 1, MNIST, LVAE with 5 latent layers (64-32-16-8-4), KL warm-up and batch "
        "normalisation",
        "importance weighted, k = 5000, on the test images",
        "several hundred (the KL warm-up alone spans the first 200)",
        f"not directly: 5 latent layers against our 3, {training}, far longer training",
    )


MODELS: dict[str, ModelSpec] = {
    "vae_1l": ModelSpec(
        "vae_1l",
        "VAE, 1 layer",
        "VAEModel: encoder 784-200-200 tanh -> Gaussian of 50; decoder 50-200-200 tanh -> 784 Bernoulli logits",
        _build_vae_1l,
        Published(
            86.76,
            f"{_BURDA}, VAE, 1 stochastic layer",
            "k = 5000 on the 10,000 test images",
            "3280",
            "same architecture and objective; far longer training (batch 20, lr 1e-3 * 10^(-i/7) for 3^i epochs, "
            "i = 0..7)",
        ),
    ),
    "stacked_2l": ModelSpec(
        "stacked_2l",
        "VAE, 2 layers",
        "StackedVAEModel defaults: 784-200-200 tanh -> z1 (100), 100-100 tanh -> z2 (50), generative path mirrored",
        _build_stacked_2l,
        Published(
            85.33,
            f"{_BURDA}, VAE, 2 stochastic layers",
            "k = 5000 on the 10,000 test images",
            "3280",
            "same architecture and objective; far longer training (batch 20, lr 1e-3 * 10^(-i/7) for 3^i epochs, "
            "i = 0..7)",
        ),
    ),
    "ladder_3l": ModelSpec(
        "ladder_3l",
        "Ladder VAE, 3 layers",
        "LadderVAEModel: latent layers 64, 32, 16; bottom-up blocks 512-512, 256-256, 128-128 leaky ReLU; "
        "top-down networks mirrored",
        _build_ladder_3l,
        _sonderby("warm-up and batch normalisation (neither used here)"),
    ),
    "ladder_3l_warmup": ModelSpec(
        "ladder_3l_warmup",
        "Ladder VAE, 3 layers,\nKL warm-up",
        "LadderVAEModel as ladder_3l (latent layers 64, 32, 16; bottom-up blocks 512-512, 256-256, 128-128 leaky "
        "ReLU; top-down networks mirrored), trained with a linear KL warm-up: KLAnnealing('linear', start=0.0, "
        "end=1.0) over the optimizer steps of the first half of the epochs",
        _build_ladder_3l,
        _sonderby("a warm-up over half our epochs (10 of 20) against the paper's 200 epochs, no batch normalisation"),
        warmup_fraction=0.5,
    ),
    "vae_iaf": ModelSpec(
        "vae_iaf",
        "VAE + IAF",
        "FlowVAEModel(posterior='iaf'): the vae_1l networks, context h = the encoder's last hidden layer (200), "
        "2 IAF steps over MADEs with one hidden layer of 200, alternating order",
        _build_vae_iaf,
        Published(
            79.88,
            "Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, Improved Variational Inference with Inverse "
            "Autoregressive Flow, NeurIPS 2016 (arXiv:1606.04934), MNIST, convolutional ResNet VAE with IAF",
            "importance weighted, k = 5000, on the test images",
            "not restated here; far more than ours",
            "no: a convolutional ResNet architecture, not comparable to an MLP",
        ),
    ),
}


def available_models() -> list[str]:
    """The models this package version can build (``vae_iaf`` needs ``FlowVAEModel``)."""
    return [name for name in MODELS if name != "vae_iaf" or FlowVAEModel is not None]


def _output_layer(model: LatentVariableModel) -> nn.Linear:
    """The decoder's last linear layer: the one emitting the 784 Bernoulli logits."""
    decoder = getattr(model, "decoder", None)
    layers = [m for m in decoder.modules() if isinstance(m, nn.Linear)] if isinstance(decoder, nn.Module) else []
    if not layers or layers[-1].out_features != 784:
        raise ValueError(f"Expected {type(model).__name__} to have a decoder ending in a linear layer of 784 outputs")
    return layers[-1]


def build(name: str, train_mean: Tensor) -> VAE:
    """The ``VAE`` of one model: Adam (lr 1e-3, eps 1e-4), the output bias at the logit of the pixel means."""
    model = MODELS[name].build()
    with torch.no_grad():  # clipped to [0.001, 0.999], as Burda et al.'s code does
        p = train_mean.flatten().clamp(0.001, 0.999)
        _output_layer(model).bias.copy_(torch.log(p) - torch.log1p(-p))
    optimizer = functools.partial(torch.optim.Adam, lr=LR, eps=ADAM_EPS)
    return VAE(model=model, optimizer=optimizer)


# ---------------------------------------------------------------------------------------------------- evaluation
def posterior_means(model: LatentVariableModel, x: Tensor, mc_samples: int) -> dict[str, dict[str, Tensor]]:
    """Each group's posterior mean ``E_q[z_g | x]`` for ``x``, estimated where it has no closed form, ``(B, D_g)``.

    Returns per group ``{"mean", "noise"}`` and, for a Gaussian group conditioned on the samples of other groups,
    ``"one_sample"``. A diagonal Gaussian of ``x`` alone gives its mean (noise 0). A Gaussian group conditioned on
    other groups' samples gives the mean over ``mc_samples`` draws of those groups of its conditional mean (the
    marginal posterior mean Burda et al. define activity on), ``"noise"`` the variance of that average (sample
    variance / ``mc_samples``), and ``"one_sample"`` its conditional mean given the first draw. Another posterior
    (a flow's: no closed-form mean) gives the mean and variance / ``mc_samples`` of ``mc_samples`` samples.
    """
    if mc_samples < 2:
        raise ValueError(f"Expected `mc_samples` to be at least 2 (a sampling variance), got {mc_samples}")
    batch = x.shape[0]
    inference = model.inference(x, mc_samples)
    out: dict[str, dict[str, Tensor]] = {}
    for name, q in inference.posteriors.items():
        gaussian = isinstance(q, DiagonalGaussian)
        if gaussian and tuple(q.batch_shape) == (batch,):
            mean = q.mean.double()
            out[name] = {"mean": mean, "noise": torch.zeros_like(mean)}
            continue
        values = (q.mean if gaussian else inference.z[name]).double()
        values = values.expand_as(inference.z[name]).reshape(-1, batch, values.shape[-1])  # (S, B, D)
        out[name] = {"mean": values.mean(0), "noise": values.var(0) / values.shape[0]}
        if gaussian:
            out[name]["one_sample"] = values[0]
    return out


def active_units(
    means: Tensor, noise: Tensor, one_sample: Tensor | None = None, threshold: float = ACTIVITY_THRESHOLD
) -> dict[str, Any]:
    """Active units of one group: ``Var_x(E_q[z_d]) > threshold``, less the Monte Carlo noise of estimated means.

    ``means`` and ``noise`` are ``(N, D)``: the (estimated) posterior means and their sampling variances. The
    variance of estimated means over the data is ``Var_x(E_q[z]) + E_x[noise]``, so the mean noise is subtracted.
    ``one_sample``: the conditional means given one sample of the other groups, counted as they are.
    """
    variance = posterior_mean_variance(means) - noise.mean(0)
    out: dict[str, Any] = {
        "active": int((variance > threshold).sum()),
        "dims": int(means.shape[1]),
        "variance": [round(float(v), 6) for v in variance],
    }
    if one_sample is not None:
        out["active_given_one_sample"] = int((posterior_mean_variance(one_sample) > threshold).sum())
    return out


def evaluate(
    vae: VAE,
    images: Tensor,
    k: int,
    *,
    batch_size: int = 100,
    chunk_size: int = 20_000,
    elbo_samples: int = 10,
    mc_samples: int = 100,
    seed: int = 1234,
    progress: bool = True,
    desc: str = "IW-NLL",
) -> dict[str, Any]:
    """IW-NLL with ``k`` samples, ELBO and active units of every group of ``vae`` on ``images``.

    The random draws come from a generator seeded with ``seed`` (the caller's random state is left alone).

    Returns:
        ``{"nll", "stderr", "k", "n_images", "elbo", "elbo_stderr", "elbo_samples", "active_units", "seconds"}``; the
        NLL and ELBO in nats per image, their standard errors over the images.
    """
    from tqdm.auto import tqdm

    was_training = vae.training
    vae.eval()
    start = time.perf_counter()
    nll_parts, elbo_parts = [], []
    means: dict[str, list[dict[str, Tensor]]] = {name: [] for name in vae.model.group_names}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        bar = tqdm(
            range(0, images.shape[0], batch_size),
            desc=desc,
            unit="batch",
            disable=not progress,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            file=sys.stderr,
        )
        for i in bar:
            x = images[i : i + batch_size].to(vae.device)
            nll_parts.append(iw_nll(vae, x, n_samples=k, chunk_size=chunk_size).double().cpu())
            elbo_parts.append(vae.log_weights(x, elbo_samples).double().mean(0).cpu())
            for name, value in posterior_means(vae.model, x, mc_samples).items():
                means[name].append(value)
            bar.set_postfix(nll=f"{float(torch.cat(nll_parts).mean()):.2f}", refresh=False)
    vae.train(was_training)
    nll, elbo = torch.cat(nll_parts), torch.cat(elbo_parts)
    if not (torch.isfinite(nll).all() and torch.isfinite(elbo).all()):
        raise FloatingPointError("The IW-NLL or ELBO of the model is not finite: the checkpoint or the run diverged")
    n = nll.numel()
    groups = {}
    for name, parts in means.items():
        joined = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
        groups[name] = active_units(joined["mean"], joined["noise"], joined.get("one_sample"))
    return {
        "nll": float(nll.mean()),
        "stderr": float(nll.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "k": k,
        "n_images": n,
        "elbo": float(elbo.mean()),
        "elbo_stderr": float(elbo.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "elbo_samples": elbo_samples,
        "mc_samples": mc_samples,
        "active_units": groups,
        "seconds": round(time.perf_counter() - start, 1),
    }


def time_evaluation(vae: VAE, images: Tensor, k: int, n_total: int, chunk_size: int) -> float:
    """Seconds the evaluation of ``n_total`` images should take, timed on the first few of ``images``."""
    few = images[: min(20, images.shape[0])]
    start = time.perf_counter()
    evaluate(vae, few, k, batch_size=few.shape[0], chunk_size=chunk_size, progress=False)
    return (time.perf_counter() - start) * n_total / few.shape[0]


# ---------------------------------------------------------------------------------------------------- the run
def _paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    smoke = reproduce.RUNS_DIR / "smoke"
    runs = Path(args.runs_dir) if args.runs_dir else (smoke if args.smoke else reproduce.RUNS_DIR) / "models"
    results = Path(args.results) if args.results else (smoke / "models_results.json" if args.smoke else RESULTS_PATH)
    figure = Path(args.figure) if args.figure else (smoke / "models.png" if args.smoke else FIGURE_PATH)
    return runs, results, figure


def _rel(path: Path) -> str:
    path = path.resolve()
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)


def _load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of the module's state dict (names, shapes, dtypes and values): which weights an entry evaluated."""
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _settings(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a results entry current: the weights it evaluated, epochs, seed, batch, smoke mode, k and images."""
    evaluation = entry.get("eval", {})
    return (
        entry.get("weights_sha256"),
        entry.get("epochs"),
        entry.get("seed"),
        entry.get("batch_size"),
        entry.get("smoke"),
        evaluation.get("k"),
        evaluation.get("n_images"),
    )


def run_model(
    name: str, args: argparse.Namespace, dm: MNISTDataModule, test_images: Tensor, deadline: float | None
) -> dict[str, Any]:
    """Train (or resume) one model to ``args.epochs`` epochs within ``deadline``, evaluate it, return its entry."""
    started = time.perf_counter()
    spec = MODELS[name]
    runs, results_path, _ = _paths(args)
    run_dir = runs / name
    last = run_dir / "last.ckpt"
    if args.fresh:
        for path in (last, *run_dir.glob("epoch=*.ckpt")):
            path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed, verbose=False)
    assert dm.train_set is not None
    vae = build(name, dm.train_set.tensors[0].mean(0))
    n_parameters = sum(p.numel() for p in vae.parameters())
    progress = reproduce.ProgressLine(args.epochs)
    steps_per_epoch = len(dm.train_dataloader())  # optimizer steps per epoch (no gradient accumulation)
    warmup = warmup_steps(spec, args.epochs, steps_per_epoch)
    annealing = None if warmup is None else KLAnnealing("linear", start=0.0, end=1.0, length=warmup, prog_bar=False)
    done = reproduce.epochs_done(torch.load(last, map_location="cpu", weights_only=False)) if last.exists() else 0

    if done < args.epochs:
        train_seconds: float | None = None
        if deadline is not None:
            eval_estimate = time_evaluation(vae, test_images, args.k, test_images.shape[0], args.chunk_size)
            train_seconds = max(deadline - time.perf_counter() - eval_estimate, 0.0)
            print(f"{name}: evaluation estimated at {eval_estimate:.0f} s; {train_seconds:.0f} s left to train")
        budget = reproduce.Budget(train_seconds, time.perf_counter())
        callbacks: list[Callback] = [
            progress,
            budget,
            ExactResume(args.seed),
            *([annealing] if annealing is not None else []),
            ModelCheckpoint(
                dirpath=run_dir, filename="{epoch}", save_top_k=1, save_last=True, save_on_train_epoch_end=True
            ),
        ]
        trainer = Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            callbacks=callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            log_every_n_steps=50,
        )
        resume = last if last.exists() else None
        print(
            f"{name}: training to epoch {args.epochs} (batch {args.batch_size}, {n_parameters:,} parameters)"
            + (f", resuming from {_rel(resume)} (after epoch {done})" if resume else ""),
            flush=True,
        )
        if resume is not None and train_seconds is not None and train_seconds <= 0:
            print(f"{name}: no time left to train within the budget; evaluating the checkpoint", flush=True)
        else:  # a first epoch always runs: the budget stops training at an epoch end
            trainer.fit(vae, datamodule=dm, ckpt_path=resume)
    if not last.exists():
        raise RuntimeError(f"{name}: training wrote no checkpoint to {last}")
    checkpoint = reproduce._load_weights(vae, last)
    epochs = reproduce.epochs_done(checkpoint)
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("ProgressLine"):
            progress.load_state_dict(state)

    previous = _load_results(results_path).get("models", {}).get(name)
    weights = weights_digest(vae)
    current = (weights, epochs, args.seed, args.batch_size, bool(args.smoke), args.k, int(test_images.shape[0]))
    if not args.reevaluate and previous is not None and current == _settings(previous):
        print(f"{name}: the results entry already evaluates this checkpoint (epoch {epochs}); kept", flush=True)
        return previous

    print(f"{name}: evaluating epoch {epochs}: IW-NLL k = {args.k} on {test_images.shape[0]} test images", flush=True)
    result = evaluate(
        vae,
        test_images,
        args.k,
        chunk_size=args.chunk_size,
        elbo_samples=args.elbo_samples,
        mc_samples=args.mc_samples,
        seed=reproduce.EVAL_SEED,
        desc=f"{name} k={args.k}",
    )
    units = ", ".join(f"{g} {u['active']}/{u['dims']}" for g, u in result["active_units"].items())
    print(
        f"RESULT {name}: test NLL {result['nll']:.2f} ± {result['stderr']:.2f} nats (k = {args.k}, "
        f"{result['n_images']} images), ELBO {result['elbo']:.2f}, active units {units}; published "
        f"{spec.published.nll:.2f} (epochs: {spec.published.epochs})",
        flush=True,
    )
    return {
        "model": name,
        "label": spec.label,
        "architecture": spec.architecture,
        "class": type(vae.model).__name__,
        "groups": list(vae.model.group_names),
        "n_parameters": n_parameters,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "optimizer": f"Adam(lr={LR}, eps={ADAM_EPS})",
        "seed": args.seed,
        "kl_warmup": None
        if warmup is None or annealing is None
        else {
            "callback": f"KLAnnealing('linear', start=0.0, end=1.0, length={warmup})",
            "steps": warmup,
            "epochs": warmup // steps_per_epoch,
            "steps_per_epoch": steps_per_epoch,
            "beta_at_last_step": float(annealing.schedule(epochs * steps_per_epoch - 1)),
        },
        "train_seconds": round(progress.train_seconds, 1),
        "eval": result,
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
        "checkpoint": _rel(last),
        "weights_sha256": weights,
        "flow_forget_bias": sorted(
            {float(f.forget_bias) for f in getattr(vae.model, "flows", []) if hasattr(f, "forget_bias")}
        ),
        "code": code_version(),
        "published": dataclasses.asdict(spec.published),
        "smoke": bool(args.smoke),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate every selected model; write the results JSON and the figure; return the results."""
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r".*`max_epochs` reached.*")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    _, results_path, figure_path = _paths(args)
    dm = MNISTDataModule(
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        val_size=0,
        binarize="dynamic",
        seed=args.seed,
        train_subset=args.smoke_train if args.smoke else None,
    )
    dm.setup("fit")
    dm.setup("test")
    assert dm.test_set is not None
    test_images = dm.test_set.tensors[0][: args.test_size]

    command = "python " + " ".join(shlex.quote(a) for a in [_rel(Path(__file__)), *args.argv])
    for i, name in enumerate(args.models):
        deadline = None
        if args.budget is not None:  # an even share of what is left for each model still to run
            left = args.budget - (time.perf_counter() - started)
            deadline = time.perf_counter() + left / (len(args.models) - i)
        entry = run_model(name, args, dm, test_images, deadline)
        results = _load_results(results_path)
        results["models"] = {**results.get("models", {}), name: entry}
        results["not_run"] = {
            n: "lightning_vae.models has no FlowVAEModel" for n in MODELS if n not in available_models()
        }
        results["protocol"] = protocol_description()
        results["machine"] = reproduce.machine_description()
        results["last_command"] = command
        _write_results(results_path, results)
    results = _load_results(results_path)
    figure = plot(results, figure_path)
    if figure is not None:
        results["figure"] = _rel(figure)
        _write_results(results_path, results)
    print(f"wrote {results_path}" + (f" and {figure}" if figure else ""), flush=True)
    return results


def code_version() -> dict[str, Any]:
    """The checkout's commit and whether the package's files differ from it (``None`` outside a git checkout)."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "lightning_vae"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "package_modified": None}
    return {"commit": commit, "package_modified": bool(changed)}


def protocol_description() -> dict[str, str]:
    """The training and evaluation settings every model shares."""
    return {
        "data": "MNIST, all 60,000 training images binarised anew per batch (dynamic binarisation); the test images "
        "binarised once with a fixed seed",
        "training": f"VAE(model=...) under a Lightning Trainer, single-sample ELBO (beta 1, no warm-up; "
        "ladder_3l_warmup alone: a linear KL warm-up, beta 0 to 1 over the first half of the epochs, see its "
        f"kl_warmup), Adam lr {LR}, "
        f"eps {ADAM_EPS}, the same batch size and epochs for every model (each entry records them), PyTorch's "
        "default weight initialisation, decoder output bias at the logit of the training pixel means; the last "
        "epoch is evaluated",
        "evaluation": "IW-NLL (lightning_vae.functional.nll.iw_nll: every latent group drawn from its posterior, "
        "log p(x, z) - log q(z|x) over all groups) with k samples per image; standard error over the test images; "
        "ELBO as the mean log-weight over elbo_samples samples; active units per group: variance over the test images "
        f"of the posterior mean > {ACTIVITY_THRESHOLD}; for a group conditioned on other groups' samples the mean is "
        "the average of its conditional mean over mc_samples draws of them (active_given_one_sample: at one draw), "
        "for the IAF posterior the average of mc_samples samples, the sampling variance of either average subtracted",
        "budget": "our epochs are far fewer than the papers' (Burda et al. trained 3280 epochs); the published figures "
        "are what these models reach with the papers' training, not a claim this run matches",
    }


# ---------------------------------------------------------------------------------------------------- the figure
def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Test NLL per model beside the published figure, and a bar chart of active units per latent group."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib; a benchmark-only dependency)")
        return None
    entries = [results["models"][n] for n in MODELS if n in results.get("models", {})]
    if not entries:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 1.3]})
    xs = range(len(entries))
    ours = [e["eval"]["nll"] for e in entries]
    published = [e["published"]["nll"] for e in entries]
    ax.bar([x - 0.2 for x in xs], ours, 0.4, yerr=[e["eval"]["stderr"] for e in entries], capsize=3, label="ours")
    ax.bar([x + 0.2 for x in xs], published, 0.4, color="0.75", hatch="//", edgecolor="0.4", label="published")
    for x, e in zip(xs, entries):
        top = e["eval"]["nll"] + e["eval"]["stderr"]
        ax.annotate(f"{e['eval']['nll']:.2f}\n{e['epochs']} ep.", (x - 0.2, top), ha="center", va="bottom", fontsize=7)
        mark = "" if e["published"]["comparable"].startswith("same") else "*"
        ax.annotate(
            f"{e['published']['nll']:.2f}{mark}", (x + 0.2, e["published"]["nll"]), ha="center", va="bottom", fontsize=7
        )
    if any(not e["published"]["comparable"].startswith("same") for e in entries):
        ax.set_xlabel("* published with another architecture or training (see the results JSON)", fontsize=7)
    low = min(ours + published)
    ax.set_ylim(low - 8, max(ours + published) + 0.12 * (max(ours + published) - low + 8) + 2)
    ax.set_xticks(list(xs), [textwrap.fill(e["label"].replace("\n", " "), 14) for e in entries], fontsize=8)
    first = entries[0]["eval"]
    ax.set_ylabel("test NLL (nats, lower is better)")
    ax.set_title(f"IW-NLL, k = {first['k']}, {first['n_images']} test images", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)

    labels, active, dims, colors = [], [], [], []
    for j, e in enumerate(entries):
        for group, units in e["eval"]["active_units"].items():
            labels.append(f"{e['model']} {group}")
            active.append(units["active"])
            dims.append(units["dims"])
            colors.append(f"C{j}")
    gx = range(len(labels))
    bx.bar(gx, dims, 0.7, color="none", edgecolor="0.5", ls="--", label="latent dimensions")
    bx.bar(gx, active, 0.7, color=colors, label="active units")
    for x, a, d in zip(gx, active, dims):
        bx.annotate(f"{a}/{d}", (x, a), ha="center", va="bottom", fontsize=7)
    bx.set_xticks(list(gx), labels, fontsize=7, rotation=45, ha="right", rotation_mode="anchor")
    bx.set_ylabel("units")
    bx.set_title(f"active units per latent group (Var_x E_q[z] > {ACTIVITY_THRESHOLD})", fontsize=9)
    bx.legend(fontsize=8)
    bx.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "lightning-vae models on dynamically binarised MNIST: our short runs against the papers' long ones", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare lightning-vae's models on MNIST (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--models", help=f"comma-separated, of {', '.join(MODELS)} (default: every available one)")
    parser.add_argument("--epochs", type=int, help="training epochs of each model, across resumes (default 5)")
    parser.add_argument("--k", type=int, help="importance samples of the IW-NLL (default 1000)")
    parser.add_argument("--test-size", type=int, help="evaluate on the first N test images (default all 10,000)")
    parser.add_argument("--budget", type=float, help="seconds for the whole invocation, split evenly over the models")
    parser.add_argument("--smoke", action="store_true", help="300 training images, 1 epoch, k = 10, 200 test images")
    parser.add_argument("--smoke-train", type=int, default=300, help="training images of --smoke")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="training batch size")
    parser.add_argument("--elbo-samples", type=int, default=10, help="samples of the ELBO estimate")
    parser.add_argument("--mc-samples", type=int, default=100, help="draws of estimated posterior means (>= 2)")
    parser.add_argument("--chunk-size", type=int, default=20_000, help="most (sample, image) pairs decoded at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and binarisation")
    parser.add_argument("--data-dir", default=reproduce.DEFAULT_MNIST_DIR, help="folder of the MNIST IDX .gz files")
    parser.add_argument("--runs-dir", help="checkpoint folders (default $LIGHTNING_VAE_RUNS_DIR/models)")
    parser.add_argument("--results", help=f"results JSON (default {_rel(RESULTS_PATH)})")
    parser.add_argument("--figure", help=f"figure path (default {_rel(FIGURE_PATH)})")
    parser.add_argument("--fresh", action="store_true", help="delete the selected models' checkpoints first")
    parser.add_argument("--reevaluate", action="store_true", help="evaluate even when the results entry is current")
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from the results JSON")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else available_models()
    for name in names:
        if name not in MODELS:
            parser.error(f"Expected --models to name models among {', '.join(MODELS)}, got {name!r}")
        if name not in available_models():
            parser.error(f"{name} needs lightning_vae.models.FlowVAEModel, which this version of the package lacks")
    if not names or len(set(names)) != len(names):
        parser.error(f"Expected --models to name distinct models, got {args.models!r}")
    args.models = names
    args.epochs = args.epochs if args.epochs is not None else (1 if args.smoke else 5)
    args.k = args.k if args.k is not None else (10 if args.smoke else 1000)
    if args.test_size is None and args.smoke:
        args.test_size = 200
    if args.mc_samples < 2:
        parser.error(f"Expected --mc-samples to be >= 2, got {args.mc_samples}")
    for name in ("epochs", "k", "test_size", "smoke_train", "batch_size", "elbo_samples", "chunk_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"Expected --{name.replace('_', '-')} to be >= 1, got {value}")
    if args.test_size is not None and args.test_size > 10_000:
        parser.error(f"Expected --test-size to be at most the 10,000 test images, got {args.test_size}")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        parser.error(f"Expected --budget to be a positive number of seconds, got {args.budget}")
    if not args.plot_only and not (Path(args.data_dir) / "t10k-images-idx3-ubyte.gz").exists():
        parser.error(f"MNIST not found in {args.data_dir!r}: pass --data-dir or set LIGHTNING_VAE_MNIST_DIR")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.plot_only:
        _, results_path, figure_path = _paths(args)
        if not results_path.exists():
            raise FileNotFoundError(f"No results to plot: {results_path} does not exist (run the benchmark first)")
        results = _load_results(results_path)
        print(f"wrote {plot(results, figure_path)}")
        return results
    return run(args)


if __name__ == "__main__":
    main()
