"""Disentangling objectives side by side on the 64 px shapes data: MIG, DCI, SAP, FactorVAE score, ELBO and the three
parts of the KL, over several seeds.

Objectives (``--objectives``, comma-separated; default all): ``vae`` (the ELBO), ``beta_vae`` (β = ``--beta``),
``beta_tcvae`` (α = γ = 1, β = ``--beta``, minibatch-stratified sampling), ``factor_vae`` (γ = 6.4, 1Konny's
discriminator), ``dip_vae_i`` (λ_od = 10, λ_d = 100) and ``info_vae`` (α = 0, λ = 100, inverse-multiquadric kernel).
Every run uses the convolutional network of Locatello et al. 2019 (``ConvEncoder`` / ``ConvDecoder`` at 64 px: four
4x4 stride-2 convolutions of 32, 32, 64, 64 channels, a dense layer of 256; latent size 10), Bernoulli pixels, Adam
with lr 1e-4 (1e-4 for FactorVAE's discriminator too, betas (0.5, 0.9)), batch 64, the same training images (data seed
0) and the run's seed for the weights and the noise.

After training, on the trained encoder's posterior means: MIG (20 bins), DCI with gradient-boosted trees, SAP, the
FactorVAE score (majority vote), all drawn from the shapes data's factors (``ShapesDataModule`` is a ground-truth
source) with ``--metric-points`` codes; and on the ``--n-val`` validation images: ELBO, reconstruction, KL and its
exact decomposition (``functional.kl_decomposition``: index-code MI, total correlation, dimension-wise KL).

Usage::

    python benchmarks/disentanglement.py --smoke                    # seconds (CI): tiny data, one seed, one epoch,
                                                                    # DCI by lasso
    python benchmarks/disentanglement.py --epochs 3 --n-train 4000 --seeds 0,1,2   # resumes where it stopped
    python benchmarks/disentanglement.py --plot-only                # redraw the figure from the results JSON

Results (``benchmarks/disentanglement_results.json``, or ``--results``) hold the settings, the commit, each finished
run and a summary (mean and standard deviation over seeds, and the two published orderings checked: Chen et al.'s
β-TCVAE MIG above β-VAE's at equal β, and Locatello et al.'s spread over seeds as large as that over objectives).
A run is the unit of resumption: finished runs are kept, an interrupted one starts again; different settings are
refused rather than mixed. matplotlib draws the figure (a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer, seed_everything

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_vae import VAE  # noqa: E402
from lightning_vae.data import Batch, ShapesDataModule  # noqa: E402
from lightning_vae.functional.dci import dci  # noqa: E402
from lightning_vae.functional.disentanglement import mutual_information_gap  # noqa: E402
from lightning_vae.functional.interventional import factor_vae_score, posterior_means, sample_codes  # noqa: E402
from lightning_vae.functional.kl_decomposition import kl_decomposition  # noqa: E402
from lightning_vae.functional.sap import sap  # noqa: E402
from lightning_vae.nets import ConvDecoder, ConvEncoder  # noqa: E402
from lightning_vae.objective import DIPVAE, ELBO, BetaTCVAE, FactorVAE, InfoVAE, Objective, model_pass  # noqa: E402

RESULTS_PATH = ROOT / "benchmarks" / "disentanglement_results.json"
FIGURE_PATH = ROOT / "benchmarks" / "disentanglement.png"
NAMES = ("vae", "beta_vae", "beta_tcvae", "factor_vae", "dip_vae_i", "info_vae")
LATENT = 10


def make_objective(name: str, beta: float) -> Objective:
    """The objective of one row of the benchmark."""
    return {
        "vae": lambda: ELBO(),
        "beta_vae": lambda: ELBO(beta=beta),
        "beta_tcvae": lambda: BetaTCVAE(alpha=1.0, beta=beta, gamma=1.0, estimator="mss"),
        "factor_vae": lambda: FactorVAE(gamma=6.4),
        "dip_vae_i": lambda: DIPVAE("i", lambda_od=10.0, lambda_d=100.0),
        "info_vae": lambda: InfoVAE(alpha=0.0, lambda_=100.0, kernel="imq"),
    }[name]()


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What makes runs comparable: a results file holds runs of one set of settings."""
    return {
        "image_size": 64,
        "latent_dim": LATENT,
        "n_train": args.n_train,
        "n_val": args.n_val,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "beta": args.beta,
        "metric_points": args.metric_points,
        "factor_vae_groups": args.factor_vae_groups,
        "dci_importance": args.dci_importance,
    }


def commit() -> str | None:
    """The checkout's commit, with ``-dirty`` when the package differs from it (``None`` outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "lightning_vae", "benchmarks/disentanglement.py"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def train(name: str, seed: int, args: argparse.Namespace, data: ShapesDataModule) -> tuple[VAE, float]:
    """One run: seeded weights and noise, the shared data; returns the trained module and its training seconds."""
    seed_everything(seed, verbose=False)
    vae = VAE(
        ConvEncoder(1, 64, latent_dim=LATENT),
        ConvDecoder(LATENT, 1, 64),
        likelihood="bernoulli",
        objective=make_objective(name, args.beta),
        optimizer=lambda params: torch.optim.Adam(params, lr=args.lr),
    )
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(vae, datamodule=data)
    return vae, time.perf_counter() - start


@torch.no_grad()
def evaluate(vae: VAE, data: ShapesDataModule, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """The metrics of one trained module (see the module docstring)."""
    vae.eval()
    data.setup("validate")
    x = torch.stack([data.val_set[i][0] for i in range(len(data.val_set))])
    locs, log_vars, recon, kl = [], [], 0.0, 0.0
    for chunk in x.split(256):
        out = model_pass(vae.model, Batch(chunk), 1)
        terms = ELBO()(vae.model, Batch(chunk), out, True)
        q = out.inference.posteriors["z"]
        locs.append(q.loc)
        log_vars.append(q.log_var)
        recon += terms.recon.item() * chunk.shape[0]
        kl += terms.kl.item() * chunk.shape[0]
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    parts = kl_decomposition(torch.cat(locs).double(), torch.cat(log_vars).double(), generator=generator)
    encode = posterior_means(vae)
    rs = np.random.RandomState(seed)
    codes, factors = sample_codes(data, encode, args.metric_points, rs)
    codes_test, factors_test = sample_codes(data, encode, max(args.metric_points // 2, 2), rs)
    dci_scores = dci(codes, factors, codes_test, factors_test, importance=args.dci_importance, seed=seed)
    sap_scores = sap(codes, factors, codes_test, factors_test)
    groups = args.factor_vae_groups
    fvae = factor_vae_score(
        data, encode, batch_size=64, n_train=groups, n_eval=max(groups // 2, 1), n_variance=args.metric_points,
        seed=seed,
    )  # fmt: skip
    return {
        "elbo": -(recon + kl) / n,
        "recon": recon / n,
        "kl": kl / n,
        "mutual_info": parts.mutual_info.item(),
        "total_correlation": parts.total_correlation.item(),
        "dimension_kl": parts.dimension_kl.item(),
        "mig": float(mutual_information_gap(torch.from_numpy(codes), torch.from_numpy(factors))),
        "dci_disentanglement": dci_scores.disentanglement,
        "dci_completeness": dci_scores.completeness,
        "dci_informativeness": dci_scores.informativeness_test,
        "sap": sap_scores.score,
        "factor_vae_score": fvae.eval_accuracy,
    }


def summarise(runs: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of each metric, and the published orderings checked."""
    summary: dict[str, Any] = {}
    for name in names:
        rows = [r["metrics"] for key, r in runs.items() if key.split("/")[0] == name]
        if not rows:
            continue
        summary[name] = {"seeds": len(rows)}
        for metric in rows[0]:
            values = [row[metric] for row in rows]
            spread = statistics.stdev(values) if len(values) > 1 else None
            summary[name][metric] = {"mean": statistics.fmean(values), "std": spread}
    orderings: dict[str, Any] = {}
    if "beta_tcvae" in summary and "beta_vae" in summary:
        tc, bv = summary["beta_tcvae"]["mig"]["mean"], summary["beta_vae"]["mig"]["mean"]
        orderings["chen_tcvae_mig_above_beta_vae"] = {"beta_tcvae": tc, "beta_vae": bv, "holds": tc > bv}
    with_seeds = [n for n in summary if summary[n]["mig"]["std"] is not None]
    if len(with_seeds) >= 2:
        within = statistics.fmean(summary[n]["mig"]["std"] for n in with_seeds)
        between = statistics.stdev(summary[n]["mig"]["mean"] for n in with_seeds)
        orderings["locatello_seed_spread_vs_objective_spread"] = {
            "mean_seed_std_of_mig": within,
            "std_of_objective_means_of_mig": between,
            "holds": within >= 0.5 * between,
            "rule": "seed spread at least half the spread between objectives",
        }
    return {"per_objective": summary, "orderings": orderings}


def figure(results: dict[str, Any], path: Path) -> None:
    """MIG per seed and objective, and the three parts of the KL per objective (means over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, summary = results["runs"], results["summary"]["per_objective"]
    names = [n for n in NAMES if n in summary]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, name in enumerate(names):
        values = [r["metrics"]["mig"] for k, r in runs.items() if k.split("/")[0] == name]
        left.scatter([i] * len(values), values, color="tab:blue", alpha=0.6)
        left.plot([i - 0.25, i + 0.25], [summary[name]["mig"]["mean"]] * 2, color="black")
    left.set_xticks(range(len(names)), names, rotation=30)
    left.set_ylabel("MIG (dots: seeds, bar: mean)")
    width = 0.25  # side by side: a part near 0 may come out slightly negative (Monte Carlo), which stacking hides
    parts = (("mutual_info", "tab:green"), ("total_correlation", "tab:red"), ("dimension_kl", "tab:gray"))
    for j, (part, color) in enumerate(parts):
        values = [summary[n][part]["mean"] for n in names]
        right.bar(np.arange(len(names)) + (j - 1) * width, values, width, color=color, label=part)
    right.scatter(range(len(names)), [summary[n]["kl"]["mean"] for n in names], color="black", marker="_", s=400,
                  label="KL (their sum)")  # fmt: skip
    right.axhline(0.0, color="black", linewidth=0.5)
    right.set_xticks(range(len(names)), names, rotation=30)
    right.set_ylabel("nats (validation set, exact)")
    right.set_title("the KL's three parts", fontsize=10)
    right.legend()
    s = results["settings"]
    fig.suptitle(f"64 px shapes, {s['n_train']} images, {s['epochs']} epochs, β = {s['beta']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(path: Path, results: dict[str, Any]) -> None:
    """Write atomically: an interrupted write leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny data, one seed, one epoch (seconds)")
    p.add_argument("--objectives", default=",".join(NAMES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=6.0)
    p.add_argument("--metric-points", type=int, default=2000)
    p.add_argument("--factor-vae-groups", type=int, default=300)
    p.add_argument("--dci-importance", choices=("gbt", "lasso"), default="gbt")
    p.add_argument("--results", default=None)
    p.add_argument("--figure", default=None)
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs, args.n_train, args.n_val = "0", 1, 64, 32
        args.batch_size, args.metric_points, args.factor_vae_groups = 32, 48, 2
        args.dci_importance = "lasso"  # seconds; the trees take most of a smoke run
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    default_dir = ROOT / "benchmarks" / "runs" / "disentanglement_smoke"
    smoke_results = default_dir / "results.json"
    results_path = Path(args.results) if args.results else (smoke_results if args.smoke else RESULTS_PATH)
    figure_path = Path(args.figure) if args.figure else (default_dir / "figure.png" if args.smoke else FIGURE_PATH)
    names = [n for n in args.objectives.split(",") if n]
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise SystemExit(f"Expected objectives among {list(NAMES)}, got {unknown}")
    wanted = settings(args)
    results: dict[str, Any] = {"settings": wanted, "runs": {}}
    if results_path.is_file():
        stored = json.loads(results_path.read_text())
        stored["settings"] = {"dci_importance": "gbt", **stored.get("settings", {})}  # files from before the option
        if stored["settings"] != wanted and not args.plot_only:
            raise SystemExit(
                f"{results_path} holds runs of other settings {stored.get('settings')}: give another --results"
            )
        results = stored
    if not args.plot_only:
        # sklearn warns that a factor of many values on few points looks like a regression target (SAP's SVMs)
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        data = ShapesDataModule(image_size=64, n_train=args.n_train, n_val=args.n_val, batch_size=args.batch_size)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for name in names:
                key = f"{name}/{seed}"
                if key in results["runs"]:
                    continue
                vae, seconds = train(name, seed, args, data)
                metrics = evaluate(vae, data, args, seed)
                results["runs"][key] = {"metrics": metrics, "train_seconds": seconds, "commit": commit()}
                results["commit"] = commit()
                threads = torch.get_num_threads()
                results["machine"] = f"{os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads"
                results["summary"] = summarise(results["runs"], list(NAMES))
                write(results_path, results)
                print(f"{key}: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}", flush=True)
    results["summary"] = summarise(results["runs"], list(NAMES))
    write(results_path, results)
    if results["runs"]:
        figure(results, figure_path)
    return results


if __name__ == "__main__":
    main()
