"""Posterior collapse for real: binarised MNIST with a PixelCNN decoder, trained four ways, and the monitor's overhead.

Runs (the same model, data, seed and number of epochs each):

(a) plain ELBO; (b) free bits (Kingma et al. 2016, ``VAE(free_bits=...)``, per dimension); (c) cyclical
KL annealing (Fu et al. 2019, the ``KLAnnealing`` callback); (d) aggressive encoder training (He et al.
2019, the ``AggressiveEncoderTraining`` callback). Every run carries a ``PosteriorCollapseMonitor``; the
table reports active units, I(x; z), KL, the importance-weighted NLL on held-out test images, wall time,
and whether the monitor flagged the run. Then the monitor's overhead: validation and training-epoch
throughput with the monitor on vs off, alternating, medians of several repeats.

Usage (from the repository root; about 40 minutes on a 2-core CPU with ``--epochs 8``)::

    python benchmarks/collapse.py --out benchmarks/collapse_results.json
    python benchmarks/collapse.py --quick            # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.callbacks import AggressiveEncoderTraining, KLAnnealing, PosteriorCollapseMonitor
from lightning_vae.data import MNISTDataModule
from lightning_vae.functional import bits_per_dim, kl_to_standard_normal
from lightning_vae.metrics import ActiveUnits, ImportanceWeightedNLL, KLPerDimension, MutualInformation
from lightning_vae.nets import ConvEncoder, PixelCNNDecoder

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("plain", "free_bits", "cyclical", "aggressive")


def build_model(args: argparse.Namespace, free_bits: float = 0.0) -> VAE:
    return VAE(
        ConvEncoder(1, 28, latent_dim=args.latent_dim),
        PixelCNNDecoder(args.latent_dim, (1, 28, 28), channels=args.channels, n_layers=args.layers),
        likelihood="bernoulli",
        free_bits=free_bits,
    )


def monitor(args: argparse.Namespace) -> PosteriorCollapseMonitor:
    return PosteriorCollapseMonitor(min_mutual_info=args.min_mutual_info, patience=args.patience)


def trainer(args: argparse.Namespace, callbacks: list[Any], **overrides: Any) -> Trainer:
    kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(ROOT / "logs" / "bench_collapse"),
    )
    kwargs.update(overrides)
    return Trainer(**kwargs)


@torch.no_grad()
def evaluate(vae: VAE, x: torch.Tensor, args: argparse.Namespace) -> dict[str, float]:
    """AU, I(x; z) and KL over the evaluation images; IW-NLL on the first ``iw_examples`` of them."""
    vae.eval()
    au, mi, kl = ActiveUnits(), MutualInformation(), KLPerDimension()
    elbo_sum = 0.0
    for xb in x.split(args.batch_size):
        q = vae.encode(xb)
        au.update(q.mean)
        mi.update(q)
        kl.update(kl_to_standard_normal(q.mean, q.variance))
        terms, _ = vae.compute_terms(xb, n_samples=1)
        elbo_sum += float(terms.elbo) * xb.shape[0]
    nll = ImportanceWeightedNLL(n_samples=args.iw_samples, chunk_size=args.iw_chunk)
    started = time.perf_counter()
    for xb in x[: args.iw_examples].split(args.batch_size):
        nll.update(vae, xb)
    nll_seconds = time.perf_counter() - started
    nll_nats = float(nll.compute())
    kl_per_dim = kl.compute()
    return {
        "active_units": int(au.compute()),
        "mutual_info": float(mi.compute()),
        "kl": float(kl_per_dim.sum()),
        "collapsed_dims": int((kl_per_dim < 0.01).sum()),
        "neg_elbo": -elbo_sum / x.shape[0],
        "nll_iw": nll_nats,
        "bits_per_dim": float(bits_per_dim(nll_nats, x[0].numel())),
        "nll_seconds": nll_seconds,
    }


def run(name: str, args: argparse.Namespace, dm: MNISTDataModule, x_eval: torch.Tensor) -> dict[str, Any]:
    seed_everything(args.seed, verbose=False)
    callbacks: list[Any] = [monitor(args)]
    vae = build_model(args, free_bits=args.free_bits if name == "free_bits" else 0.0)
    steps_per_epoch = math.ceil(len(dm.train_set) / args.batch_size)  # type: ignore[arg-type]
    if name == "cyclical":
        callbacks.append(
            KLAnnealing(
                "cyclical", length=args.epochs * steps_per_epoch, n_cycles=args.cycles, ratio=0.5, prog_bar=False
            )
        )
    if name == "aggressive":
        callbacks.append(
            AggressiveEncoderTraining(
                max_inner_steps=args.inner_steps, check_every=args.check_every, mi_batches=args.mi_batches
            )
        )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        started = time.perf_counter()
        trainer(args, callbacks).fit(vae, dm)
        train_seconds = time.perf_counter() - started
    flags = [str(w.message) for w in record if "Posterior collapse" in str(w.message)]
    mon = callbacks[0]
    result: dict[str, Any] = {
        "run": name,
        "train_seconds": train_seconds,
        "flagged": bool(flags),
        "flag_message": flags[0] if flags else None,
        "monitor_history": [{"step": s, "kl": float(sum(h))} for s, h in zip(mon.history_steps, mon.history)],
        "kl_per_dim_history": mon.history,  # (checks, D) nats: what the monitor's heat map shows
        "monitor_last": mon.last,
    }
    if name == "aggressive":
        agg = callbacks[1]
        result["aggressive"] = {
            "epochs_active": agg.aggressive_epochs,
            "inner_steps_total": agg.inner_steps_total,
            "mi_history": agg.mi_history,
            "switched_off_at_step": agg.switched_off_at_step,
        }
    started = time.perf_counter()
    result.update(evaluate(vae, x_eval, args))
    result["eval_seconds"] = time.perf_counter() - started
    brief = {k: v for k, v in result.items() if k not in ("flag_message", "monitor_history", "kl_per_dim_history")}
    print(json.dumps(brief), flush=True)
    return result


class TimedMonitor(PosteriorCollapseMonitor):
    """The monitor with the wall time spent in its own hooks added up (the direct measure of its overhead)."""

    seconds = 0.0

    def on_validation_epoch_start(self, *args: Any) -> None:
        started = time.perf_counter()
        super().on_validation_epoch_start(*args)
        TimedMonitor.seconds += time.perf_counter() - started

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        super().on_validation_batch_end(*args, **kwargs)
        TimedMonitor.seconds += time.perf_counter() - started

    def on_validation_epoch_end(self, *args: Any) -> None:
        started = time.perf_counter()
        super().on_validation_epoch_end(*args)
        TimedMonitor.seconds += time.perf_counter() - started


@torch.no_grad()
def per_batch_costs(
    args: argparse.Namespace, vae: VAE, x: torch.Tensor, repeats: int = 9, calls: int = 5
) -> dict[str, float]:
    """Seconds per call of a validation step and of the monitor's batch hook, each the minimum over ``repeats``.

    The minimum of repeated timings is what the code costs when nothing else competes for the CPU; on a shared
    machine it is far steadier than the wall time of whole runs.
    """
    vae.eval()
    mon = monitor(args)
    mon.on_validation_epoch_start(None, vae)  # type: ignore[arg-type]

    def step() -> dict[str, Any]:
        terms, out = vae.compute_terms(x, n_samples=1)
        return {"loss": terms.loss, "posterior": out.posterior, "z": out.z[0], "kl_per_dim": terms.kl_per_dim}

    outputs = step()

    def hook() -> None:
        mon.on_validation_batch_end(None, vae, outputs, (x, None), 0)  # type: ignore[arg-type]

    def best(fn: Any) -> float:
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            timings.append((time.perf_counter() - started) / calls)
        return min(timings)

    step_s, hook_s = [], []
    for _ in range(3):  # alternate
        step_s.append(best(step))
        hook_s.append(best(hook))
    return {"step_seconds": min(step_s), "monitor_hook_seconds": min(hook_s), "batch_size": x.shape[0]}


def overhead(args: argparse.Namespace, dm: MNISTDataModule) -> dict[str, Any]:
    """Wall time with the monitor on vs off, alternating: a validation pass, and a short epoch with validation."""
    seed_everything(args.seed, verbose=False)
    vae = build_model(args)
    assert dm.test_set is not None
    images, labels = (t[: args.overhead_val_size] for t in dm.test_set.tensors)
    val_loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size)
    times: dict[str, list[float]] = {"val_off": [], "val_on": [], "epoch_off": [], "epoch_on": []}
    trainer(args, [monitor(args)], max_epochs=1, limit_train_batches=2).fit(vae, dm)  # warm-up, not timed
    for i in range(args.overhead_repeats):
        order = ("off", "on") if i % 2 == 0 else ("on", "off")
        for mode in order:
            callbacks = [monitor(args)] if mode == "on" else []
            started = time.perf_counter()
            trainer(args, callbacks).validate(vae, val_loader, verbose=False)
            times[f"val_{mode}"].append(time.perf_counter() - started)
        for mode in order:
            callbacks = [monitor(args)] if mode == "on" else []
            started = time.perf_counter()
            trainer(args, callbacks, max_epochs=1, limit_train_batches=args.overhead_train_batches).fit(vae, dm)
            times[f"epoch_{mode}"].append(time.perf_counter() - started)
    # The direct measure: time inside the monitor's hooks over a whole validation pass with it on.
    TimedMonitor.seconds = 0.0
    started = time.perf_counter()
    trainer(args, [TimedMonitor(min_mutual_info=args.min_mutual_info, patience=args.patience)]).validate(
        vae, val_loader, verbose=False
    )
    in_hooks = {"monitor_seconds": TimedMonitor.seconds, "validation_seconds": time.perf_counter() - started}
    med = {k: statistics.median(v) for k, v in times.items()}
    costs = per_batch_costs(args, vae, images[: args.batch_size])
    return {
        "per_batch": costs,
        "per_batch_ratio": costs["monitor_hook_seconds"] / costs["step_seconds"],
        "hooks": in_hooks,
        "hook_fraction_of_validation": in_hooks["monitor_seconds"] / in_hooks["validation_seconds"],
        "times": times,
        "median": med,
        "val_throughput_ratio_on_over_off": med["val_off"] / med["val_on"],
        "epoch_throughput_ratio_on_over_off": med["epoch_off"] / med["epoch_on"],
        "val_examples": images.shape[0],
        "epoch_train_batches": args.overhead_train_batches,
    }


def report(results: dict[str, Any]) -> str:
    """The markdown table of a results JSON (``--report``)."""
    names = {
        "plain": "(a) plain ELBO",
        "free_bits": "(b) free bits",
        "cyclical": "(c) cyclical annealing",
        "aggressive": "(d) aggressive training",
    }
    lines = [
        "| run | AU (of D) | I(x; z) nats | KL nats | dims KL < 0.01 | -ELBO nats | IW-NLL nats (bits/dim) "
        "| train wall s | monitor flagged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"]:
        d = r["monitor_last"]["latent_dim"]
        lines.append(
            f"| {names[r['run']]} | {r['active_units']}/{d} | {r['mutual_info']:.2f} | {r['kl']:.2f} | "
            f"{r['collapsed_dims']} | {r['neg_elbo']:.2f} | {r['nll_iw']:.2f} ({r['bits_per_dim']:.4f}) | "
            f"{r['train_seconds']:.0f} | {'yes' if r['flagged'] else 'no'} |"
        )
    if "overhead" not in results:
        return "\n".join(lines)
    o = results["overhead"]
    lines.append("")
    c = o["per_batch"]
    lines.append(
        f"Monitor overhead per validation batch of {c['batch_size']}: {1e3 * c['monitor_hook_seconds']:.2f} ms in its "
        f"hook vs {1e3 * c['step_seconds']:.1f} ms for the validation step ({100 * o['per_batch_ratio']:.2f}%; "
        "minimum of repeated timings). "
        f"In one timed pass {100 * o['hook_fraction_of_validation']:.2f}% of a validation pass was spent in its hooks "
        f"({o['hooks']['monitor_seconds']:.3f} s of {o['hooks']['validation_seconds']:.2f} s). "
        f"Medians of {len(o['times']['val_on'])} alternating repeats: validation throughput "
        f"on/off = {o['val_throughput_ratio_on_over_off']:.3f} ({o['val_examples']} images), training epoch of "
        f"{o['epoch_train_batches']} batches with validation on/off = {o['epoch_throughput_ratio_on_over_off']:.3f}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--eval-size", type=int, default=1000, help="test images for AU, MI, KL")
    parser.add_argument("--iw-examples", type=int, default=500, help="test images for the IW-NLL")
    parser.add_argument("--iw-samples", type=int, default=100)
    parser.add_argument("--iw-chunk", type=int, default=1600)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--free-bits", type=float, default=0.25, help="nats per latent dimension")
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--inner-steps", type=int, default=6)
    parser.add_argument("--check-every", type=int, default=3)
    parser.add_argument("--mi-batches", type=int, default=8)
    parser.add_argument("--min-mutual-info", type=float, default=math.log(10))
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--overhead-repeats", type=int, default=10)
    parser.add_argument("--overhead-train-batches", type=int, default=60)
    parser.add_argument("--overhead-val-size", type=int, default=5000, help="test images of the timed validation pass")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report", type=Path, default=None, help="print the markdown table of a results JSON and exit")
    parser.add_argument("--overhead-only", action="store_true", help="measure only the overhead; update --out")
    parser.add_argument("--skip-overhead", action="store_true", help="train and evaluate only")
    args = parser.parse_args()
    if args.report is not None:
        print(report(json.loads(args.report.read_text())))
        return
    if args.quick:
        args.train_size, args.val_size, args.eval_size, args.iw_examples, args.iw_samples = 256, 128, 128, 16, 8
        args.epochs, args.channels, args.layers, args.inner_steps, args.mi_batches = 2, 8, 2, 2, 2
        args.overhead_repeats, args.overhead_train_batches, args.overhead_val_size = 1, 2, 128
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    dm = MNISTDataModule(
        args.data_dir, batch_size=args.batch_size, val_size=args.val_size, train_subset=args.train_size
    )
    dm.setup("fit")
    dm.setup("test")
    assert dm.test_set is not None
    x_eval = dm.test_set.tensors[0][: args.eval_size]
    if args.overhead_only:
        results = json.loads(args.out.read_text()) if args.out is not None and args.out.exists() else {}
        results["overhead"] = overhead(args, dm)
        results["overhead"]["config"] = {"repeats": args.overhead_repeats, "date": time.strftime("%Y-%m-%d %H:%M")}
        print(json.dumps({k: v for k, v in results["overhead"].items() if k != "times"}))
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=2))
        return
    started = time.perf_counter()
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        },
        "runs": [run(name, args, dm, x_eval) for name in args.runs],
    }
    if not args.skip_overhead:
        results["overhead"] = overhead(args, dm)
        print(
            json.dumps(results["overhead"]["median"]),
            json.dumps({k: v for k, v in results["overhead"].items() if "ratio" in k}),
        )
    results["total_seconds"] = time.perf_counter() - started
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    print(f"total {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
