"""The same VAE trained by this suite and by pythae on the same binarised MNIST, each evaluated by both evaluators.

The model is pythae's reproduction VAE (``examples/scripts/reproducibility/vae.py`` of clementchadebec/benchmark_VAE):
784-400 ReLU -> Gaussian (loc, log-variance) of 40, 40-400 ReLU -> 784 Bernoulli means; ELBO; Adam lr 1e-4 (default
betas and eps), batch 100, MultiStepLR at epochs [200, 350, 500, 750, 1000] by 10^(-1/5) stepped per epoch; the
epoch with the best validation loss is kept (pythae's trainer keeps it; here a callback does the same). Both sides
read one file of statically binarised MNIST that this script writes (MNIST's 60,000 training images split into the
first 50,000 for training and the last 10,000 for validation, and the 10,000 test images; each pixel drawn once from
Bernoulli(grey level) with a fixed seed), so they train, select and test on the same bits.

Each side runs in its own environment; pythae is imported only by the ``*-pythae`` steps, this suite only by the
``*-ours`` steps, so the script runs in either::

    python benchmarks/pythae_side_by_side.py data                                # writes the binarised data file
    python benchmarks/pythae_side_by_side.py train-ours --epochs 20              # this suite: VAE + Lightning Trainer
    /path/to/pythae-venv/bin/python benchmarks/pythae_side_by_side.py train-pythae --epochs 20  # pythae's trainer
    python benchmarks/pythae_side_by_side.py eval-ours --k 1000                  # this suite's IW-NLL, both weights
    /path/to/pythae-venv/bin/python benchmarks/pythae_side_by_side.py eval-pythae --k 1000     # pythae's get_nll
    python benchmarks/pythae_side_by_side.py report                              # the pair, the differences

More training seeds give the seed spread the comparison of the two models is judged by: ``--seed S`` on the
``train-*`` and ``eval-*`` steps keeps that run's weights apart (``side_by_side_{side}_seedS.safetensors``) and its
results under ``train_ours_seedS`` etc.; ``report`` then adds both models' mean and standard deviation over the
seeds (this suite's evaluator, which every seed has).

The weights of both trained models are written in one layout (safetensors, pythae's parameter names for this
encoder and decoder: ``encoder.hidden``, ``encoder.loc``, ``encoder.log_var``, ``decoder.hidden``, ``decoder.out``)
to ``benchmarks/weights/side_by_side_{ours,pythae}.safetensors``; each evaluator loads both files into its own model.
Results go to ``benchmarks/pythae_side_by_side.json``. The binarised data stays in ``benchmarks/runs/side_by_side/``
(ignored by git: MNIST is not part of the repository).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST_DIR = os.environ.get("MNIST_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))
WORK_DIR = ROOT / "benchmarks" / "runs" / "side_by_side"
DATA_FILE = WORK_DIR / "binarized_mnist.npz"
SIDES = ("ours", "pythae")
RESULTS_PATH = ROOT / "benchmarks" / "pythae_side_by_side.json"
#: Seed of the binarisation (the data file), of both trainings, and of the evaluations' importance samples.
DATA_SEED, TRAIN_SEED, EVAL_SEED = 20151, 123, 1234
LATENT, HIDDEN = 40, 400


def weights_path(side: str, seed: int = TRAIN_SEED) -> Path:
    """Where one side's weights of the training run with ``seed`` are kept (the first run's seed: no suffix)."""
    suffix = "" if seed == TRAIN_SEED else f"_seed{seed}"
    return ROOT / "benchmarks" / "weights" / f"side_by_side_{side}{suffix}.safetensors"


def section(step: str, seed: int = TRAIN_SEED) -> str:
    """The results JSON's key for ``step`` (e.g. ``train-ours``) of the run with ``seed``."""
    key = step.replace("-", "_")
    return key if seed == TRAIN_SEED else f"{key}_seed{seed}"


#: The weights of the first run (seed 123), as the README and earlier results name them.
WEIGHTS = {side: weights_path(side) for side in SIDES}
MILESTONES, GAMMA = (200, 350, 500, 750, 1000), 10 ** (-1 / 5)


# ---------------------------------------------------------------------------------------------------- data
def _read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if int.from_bytes(raw[:4], "big") != 2051:
        raise ValueError(f"{path} is not an IDX image file")
    n, rows, cols = (int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in (1, 2, 3))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def write_data(mnist_dir: Path, path: Path = DATA_FILE, seed: int = DATA_SEED) -> dict[str, Any]:
    """Binarise MNIST once (train 50,000 / validation 10,000 / test 10,000) and save it as uint8 ``(N, 784)``."""
    train = _read_idx_images(mnist_dir / "train-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
    test = _read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
    rng = np.random.default_rng(seed)
    splits = {"train": train[:50_000], "valid": train[50_000:], "test": test}
    binary = {name: (rng.random(x.shape) < x).astype(np.uint8) for name, x in splits.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **binary)
    info = {"path": _relative(path), "seed": seed, "sha256": _sha256(path)}
    info.update({f"n_{name}": int(x.shape[0]) for name, x in binary.items()})
    return info


def load_data(path: Path = DATA_FILE) -> dict[str, torch.Tensor]:
    """The binarised splits as float32 tensors of shape ``(N, 1, 28, 28)``."""
    if not path.exists():
        raise FileNotFoundError(f"No data file {path}: run `python benchmarks/pythae_side_by_side.py data` first")
    with np.load(path) as f:
        return {name: torch.from_numpy(f[name].astype(np.float32)).view(-1, 1, 28, 28) for name in f.files}


# ---------------------------------------------------------------------------------------------------- helpers
def _relative(path: Path) -> str:
    return os.path.relpath(path, ROOT) if path.resolve().is_relative_to(ROOT) else str(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lr_factor(epoch: int) -> float:
    """pythae's ``MultiStepLR(milestones, gamma)`` factor after ``epoch`` scheduler steps."""
    return GAMMA ** sum(1 for m in MILESTONES if epoch >= m)


def save_neutral(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path), metadata=meta)
    path.chmod(0o644)


def load_neutral(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _update_results(section: str, value: Any, path: Path = RESULTS_PATH) -> None:
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results[section] = value
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------------------------------- this suite
def _ours_module() -> Any:
    import importlib.util

    name = "lightning_vae_reproduce_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "reproduce.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def build_ours(lr: float = 1e-4) -> Any:
    """This suite's ``VAE`` with pythae's reproduction network (``MLPEncoder``/``MLPDecoder``, ReLU, 400 units)."""
    import functools

    from lightning_vae import VAE
    from lightning_vae.nets import MLPDecoder, MLPEncoder

    encoder = MLPEncoder((1, 28, 28), latent_dim=LATENT, hidden_sizes=(HIDDEN,), activation="relu")
    decoder = MLPDecoder(LATENT, (1, 28, 28), hidden_sizes=(HIDDEN,), activation="relu")
    optimizer = functools.partial(torch.optim.Adam, lr=lr)
    scheduler = functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lr_factor)
    return VAE(encoder, decoder, likelihood="bernoulli", optimizer=optimizer, lr_scheduler=scheduler)


def ours_to_neutral(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This suite's state dict in the common layout (the encoder head holds loc and log-variance stacked)."""
    loc_w, log_var_w = state["model.encoder.head.weight"].chunk(2, dim=0)
    loc_b, log_var_b = state["model.encoder.head.bias"].chunk(2, dim=0)
    return {
        "encoder.hidden.weight": state["model.encoder.body.0.weight"],
        "encoder.hidden.bias": state["model.encoder.body.0.bias"],
        "encoder.loc.weight": loc_w,
        "encoder.loc.bias": loc_b,
        "encoder.log_var.weight": log_var_w,
        "encoder.log_var.bias": log_var_b,
        "decoder.hidden.weight": state["model.decoder.body.0.weight"],
        "decoder.hidden.bias": state["model.decoder.body.0.bias"],
        "decoder.out.weight": state["model.decoder.head.weight"],
        "decoder.out.bias": state["model.decoder.head.bias"],
    }


def neutral_to_ours(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`ours_to_neutral`."""
    return {
        "model.encoder.body.0.weight": t["encoder.hidden.weight"],
        "model.encoder.body.0.bias": t["encoder.hidden.bias"],
        "model.encoder.head.weight": torch.cat([t["encoder.loc.weight"], t["encoder.log_var.weight"]]),
        "model.encoder.head.bias": torch.cat([t["encoder.loc.bias"], t["encoder.log_var.bias"]]),
        "model.decoder.body.0.weight": t["decoder.hidden.weight"],
        "model.decoder.body.0.bias": t["decoder.hidden.bias"],
        "model.decoder.head.weight": t["decoder.out.weight"],
        "model.decoder.head.bias": t["decoder.out.bias"],
    }


def train_ours(epochs: int, data: dict[str, torch.Tensor], threads: int, seed: int = TRAIN_SEED) -> dict[str, Any]:
    """Train this suite's model with the Lightning Trainer; keep the best validation epoch's weights."""
    from lightning.pytorch import Callback, Trainer, seed_everything
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(threads)
    seed_everything(seed, verbose=False)
    model = build_ours()

    class KeepBest(Callback):
        """pythae's rule: after each epoch, keep a copy of the model if its validation loss is the lowest so far."""

        def __init__(self) -> None:
            self.best_loss, self.best_epoch, self.best_state = math.inf, 0, None
            self.epoch_seconds: list[float] = []
            self._start = 0.0

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._start = time.perf_counter()

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            loss = -float(trainer.callback_metrics["val/elbo"])
            epoch = trainer.current_epoch + 1
            if loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, epoch
                self.best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            print(f"ours epoch {epoch}/{epochs}: validation loss {loss:.3f} (best {self.best_loss:.3f})", flush=True)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.epoch_seconds.append(time.perf_counter() - self._start)

    keep = KeepBest()
    train = DataLoader(TensorDataset(data["train"]), batch_size=100, shuffle=True)
    valid = DataLoader(TensorDataset(data["valid"]), batch_size=100)
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[keep],
    )
    started = time.perf_counter()
    trainer.fit(model, train, valid)
    assert keep.best_state is not None
    path = weights_path("ours", seed)
    save_neutral(ours_to_neutral(keep.best_state), path, {"side": "ours", "epoch": str(keep.best_epoch)})
    return {
        "trainer": "lightning_vae.VAE + lightning.pytorch.Trainer",
        "seed": seed,
        "epochs": epochs,
        "best_epoch": keep.best_epoch,
        "best_validation_loss": keep.best_loss,
        "train_seconds": round(time.perf_counter() - started, 1),
        "seconds_per_epoch": round(sum(keep.epoch_seconds) / max(len(keep.epoch_seconds), 1), 2),
        "weights": {"path": _relative(path), "sha256": _sha256(path)},
        "machine": _machine(),
    }


def eval_ours(k: int, test: torch.Tensor, threads: int, seed: int = TRAIN_SEED) -> dict[str, Any]:
    """This suite's evaluator (``ImportanceWeightedNLL`` through ``reproduce.evaluate_nll``) on both weight sets."""
    torch.set_num_threads(threads)
    reproduce = _ours_module()
    out: dict[str, Any] = {}
    for side in SIDES:
        path = weights_path(side, seed)
        model = build_ours()
        model.load_state_dict(neutral_to_ours(load_neutral(path)))
        result = reproduce.evaluate_nll(model, test, k, seed=EVAL_SEED, progress=False)
        out[side] = {**result, "weights_sha256": _sha256(path)}
        print(f"this suite's evaluator, {side} weights: {result['nll']:.4f} nats ({result['seconds']:.0f} s)")
    return out


# ---------------------------------------------------------------------------------------------------- pythae
def _pythae_networks() -> tuple[Any, Any]:
    """pythae encoder and decoder classes with the reproduction script's network (written against pythae's API)."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            self.hidden = nn.Linear(784, HIDDEN)
            self.loc, self.log_var = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)

        def forward(self, x: torch.Tensor) -> Any:
            h = torch.relu(self.hidden(x.reshape(x.shape[0], -1)))
            return ModelOutput(embedding=self.loc(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            self.hidden, self.out = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, 784)

        def forward(self, z: torch.Tensor) -> Any:
            probs = torch.sigmoid(self.out(torch.relu(self.hidden(z))))
            return ModelOutput(reconstruction=probs.reshape(z.shape[0], 1, 28, 28))

    return Encoder, Decoder


def build_pythae() -> Any:
    from pythae.models import VAE, VAEConfig

    encoder_cls, decoder_cls = _pythae_networks()
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    return VAE(model_config=config, encoder=encoder_cls(), decoder=decoder_cls())


def train_pythae(epochs: int, data: dict[str, torch.Tensor], threads: int, seed: int = TRAIN_SEED) -> dict[str, Any]:
    """Train pythae's VAE with pythae's ``BaseTrainer`` and its reproduction settings; keep its best model."""
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_pythae()
    config = BaseTrainerConfig(
        output_dir=str(WORK_DIR / "pythae"),
        per_device_train_batch_size=100,
        per_device_eval_batch_size=100,
        num_epochs=epochs,
        learning_rate=1e-4,
        steps_saving=None,
        steps_predict=None,
        no_cuda=True,
        seed=seed,
        scheduler_cls="MultiStepLR",
        scheduler_params={"milestones": list(MILESTONES), "gamma": GAMMA},
    )
    train = BaseDataset(data["train"], torch.zeros(data["train"].shape[0]))
    valid = BaseDataset(data["valid"], torch.zeros(data["valid"].shape[0]))
    trainer = BaseTrainer(model=model, train_dataset=train, eval_dataset=valid, training_config=config)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    best = trainer._best_model  # pythae keeps the model of the lowest validation loss here
    neutral = {k: v for k, v in best.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    path = weights_path("pythae", seed)
    save_neutral(neutral, path, {"side": "pythae"})
    valid_loss = _pythae_loss(best, data["valid"])
    return {
        "trainer": "pythae.models.VAE + pythae.trainers.BaseTrainer",
        "seed": seed,
        "epochs": epochs,
        "best_validation_loss": valid_loss,
        "train_seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / epochs, 2),
        "weights": {"path": _relative(path), "sha256": _sha256(path)},
        "machine": _machine(),
    }


@torch.no_grad()
def _pythae_loss(model: Any, x: torch.Tensor) -> float:
    model.eval()
    losses = [float(model({"data": x[i : i + 100]}).loss) for i in range(0, x.shape[0], 100)]
    return sum(losses) / len(losses)


@torch.no_grad()
def eval_pythae(k: int, test: torch.Tensor, threads: int, seed: int = TRAIN_SEED) -> dict[str, Any]:
    """pythae's evaluator (``VAE.get_nll``: k importance samples per image, 100 at a time) on both weight sets."""
    torch.set_num_threads(threads)
    out: dict[str, Any] = {}
    for side in SIDES:
        path = weights_path(side, seed)
        model = build_pythae()
        missing = model.load_state_dict(load_neutral(path), strict=False)
        if missing.missing_keys or missing.unexpected_keys:
            raise ValueError(f"{path} does not fit pythae's model: {missing}")
        model.eval()
        torch.manual_seed(EVAL_SEED)
        started = time.perf_counter()
        nll = -float(model.get_nll(test, n_samples=k, batch_size=100))
        # get_nll returns the mean log-likelihood (a negative number) despite its name
        out[side] = {"nll": nll, "k": k, "n_images": int(test.shape[0]), "seconds": time.perf_counter() - started}
        out[side]["weights_sha256"] = _sha256(path)
        print(f"pythae's evaluator, {side} weights: {nll:.4f} nats ({out[side]['seconds']:.0f} s)")
    return out


# ---------------------------------------------------------------------------------------------------- report
def report(path: Path = RESULTS_PATH) -> dict[str, Any]:
    """The 2 x 2 table (weights x evaluator) and the two differences the targets are about."""
    results = json.loads(path.read_text())
    if "eval_ours" not in results or "eval_pythae" not in results:
        raise FileNotFoundError("Run eval-ours and eval-pythae first")
    ev_ours, ev_pythae = results["eval_ours"]["result"], results["eval_pythae"]["result"]
    table = {side: {"ours": ev_ours[side]["nll"], "pythae": ev_pythae[side]["nll"]} for side in WEIGHTS}
    summary = {
        "nll": table,
        "evaluator_difference": {side: table[side]["ours"] - table[side]["pythae"] for side in WEIGHTS},
        "model_difference": {ev: table["ours"][ev] - table["pythae"][ev] for ev in ("ours", "pythae")},
        "same_weights_digest": all(
            ev_ours[side]["weights_sha256"] == ev_pythae[side]["weights_sha256"] for side in WEIGHTS
        ),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    summary["seeds"] = seed_spread(results)
    _update_results("summary", summary, path)
    for side in WEIGHTS:
        print(
            f"{side:6s} weights: this suite's evaluator {table[side]['ours']:.4f}, pythae's {table[side]['pythae']:.4f}"
            f" (difference {summary['evaluator_difference'][side]:+.4f})"
        )
    return summary


def seed_spread(results: dict[str, Any]) -> dict[str, Any]:
    """Both models over the training seeds run so far, by this suite's evaluator (the one every seed has), and the
    two evaluators' difference on each seed's weights where both ran.

    Per seed, the IW-NLL of each side's weights (``eval_ours`` of the seed); per side, the mean and the standard
    deviation over seeds; and whether this suite's model is worse than pythae's by no more than the seed spread (the
    larger of the two sides' standard deviations), the target of the comparison. Needs two seeds or more for a
    spread (with one, the spread is ``None``).
    """
    per_seed: dict[str, dict[str, float]] = {}
    evaluators: dict[str, dict[str, float]] = {}  # this suite's minus pythae's evaluator, where a seed has both
    for key, value in results.items():
        if key == "eval_ours" or key.startswith("eval_ours_seed"):
            seed = str(TRAIN_SEED) if key == "eval_ours" else key.removeprefix("eval_ours_seed")
            per_seed[seed] = {side: value["result"][side]["nll"] for side in SIDES}
            other = results.get("eval_pythae" if key == "eval_ours" else f"eval_pythae_seed{seed}")
            if other is not None:
                evaluators[seed] = {side: value["result"][side]["nll"] - other["result"][side]["nll"] for side in SIDES}
    sides: dict[str, Any] = {}
    for side in SIDES:
        values = [nll[side] for nll in per_seed.values()]
        sides[side] = {
            "mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else None,
        }
    spread = max(sides[s]["sd"] for s in SIDES) if len(per_seed) > 1 else None
    difference = sides["ours"]["mean"] - sides["pythae"]["mean"] if per_seed else None
    return {
        "evaluator": "this suite's (eval-ours)",
        "per_seed": per_seed,
        "by_side": sides,
        "model_difference_mean": difference,
        "seed_spread": spread,
        "ours_within_spread": None if spread is None or difference is None else difference <= spread,
        "evaluator_difference_per_seed": evaluators,
        "evaluator_difference_max_abs": max((abs(d) for e in evaluators.values() for d in e.values()), default=None),
    }


def main(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["data", "train-ours", "train-pythae", "eval-ours", "eval-pythae", "report"])
    parser.add_argument("--data-dir", default=DEFAULT_MNIST_DIR, help="folder of the MNIST IDX .gz files")
    parser.add_argument("--epochs", type=int, default=500, help="training epochs (pythae's script: 500)")
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--test-size", type=int, help="the first N test images (default all 10,000)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--seed", type=int, default=TRAIN_SEED, help=f"training seed of the run (default {TRAIN_SEED}, the first run)"
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "k", "threads", "test_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"Expected --{name.replace('_', '-')} to be >= 1, got {value}")
    command = "python benchmarks/pythae_side_by_side.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.step == "data":
        info = write_data(Path(args.data_dir))
        _update_results("data", info)
        print(f"wrote {info['path']}")
        return info
    if args.step == "report":
        return report()
    try:
        data = load_data()
    except FileNotFoundError as err:
        parser.exit(2, f"error: {err}\n")
    test = data["test"][: args.test_size] if args.test_size else data["test"]
    step = {"train-ours": train_ours, "train-pythae": train_pythae}.get(args.step)
    if step is not None:
        result = step(args.epochs, data, args.threads, args.seed)
    else:
        paths = [weights_path(side, args.seed) for side in SIDES]
        missing = [_relative(path) for path in paths if not path.exists()]
        if missing:  # before any model is built: name what is missing and the steps that write it
            parser.exit(
                2,
                f"error: No weights {', '.join(missing)}: run `train-ours --seed {args.seed}` and "
                f"`train-pythae --seed {args.seed}` first\n",
            )
        evaluate = eval_ours if args.step == "eval-ours" else eval_pythae
        result = evaluate(args.k, test, args.threads, args.seed)
    result = {
        "result": result,
        "command": command,
        "date": datetime.datetime.now().astimezone().isoformat("T", "seconds"),
    }
    _update_results(section(args.step, args.seed), result)
    return result


if __name__ == "__main__":
    main()
