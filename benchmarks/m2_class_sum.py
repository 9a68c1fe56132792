"""Per-step cost of M2's class sum: the vectorised sum over classes against one class pass and a loop over classes.

Three training steps (forward and backward) of the same M2 networks (784-500-50 softplus MLPs, 10 classes) on the
same batch of ``--unlabelled`` unlabelled and ``--labelled`` labelled MNIST-sized examples:

- ``class_sum``: the M2 objective's step (``M2.training_terms``): every class of the unlabelled examples and the
  labelled examples in one pass of ``labelled + 10 · unlabelled`` rows;
- ``one_class``: one pass of the same networks with one label per example (the cost the step would have if every
  example carried a label; the conditional ELBO of ``ConditionalVAEModel``), plus the classifier;
- ``class_loop``: the same bound as ``class_sum`` with one encoder/decoder pass per class (the unvectorised form).

The three are timed interleaved (round-robin over repeats), and the median of each is reported with the ratios.

    python benchmarks/m2_class_sum.py --repeats 30 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_vae.data import Batch
from lightning_vae.models import M2Model
from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder, MLPClassifier
from lightning_vae.objective import M2, labelled_bound, unlabelled_bound

SHAPE = (1, 28, 28)


def build() -> M2Model:
    return M2Model(
        ConditionalMLPEncoder(SHAPE, 10, 50, (500,), "softplus"),
        ConditionalMLPDecoder(50, 10, SHAPE, (500,), "softplus"),
        MLPClassifier(SHAPE, 10, (500,), "softplus"),
        n_classes=10,
    )


def steps(model: M2Model, x: Tensor, y: Tensor) -> dict[str, Callable[[], None]]:
    objective = M2(alpha=0.1, labelled_fraction=0.002)
    known = y >= 0

    def class_sum() -> None:
        objective.training_terms(model, Batch(x, y), report=False, check=False).loss.backward()

    def one_class() -> None:
        labels = torch.where(known, y, torch.zeros_like(y))
        out = model(x, 1, context=labels)
        loss = labelled_bound(model, x, out).neg_bound.mean() + F.cross_entropy(model.classify(x), labels)
        loss.backward()

    def class_loop() -> None:
        x_l, y_l, x_u = x[known], y[known], x[~known]
        neg_l = labelled_bound(model, x_l, model(x_l, 1, context=y_l)).neg_bound
        per_class = []
        for c in range(10):
            labels = torch.full((x_u.shape[0],), c)
            per_class.append(labelled_bound(model, x_u, model(x_u, 1, context=labels)).neg_bound)
        logits = model.classify(x)
        neg_u = unlabelled_bound(torch.stack(per_class, -1), logits[~known])
        loss = 0.002 * neg_l.mean() + 0.998 * neg_u.mean() + 0.1 * F.cross_entropy(logits[known], y_l)
        loss.backward()

    return {"class_sum": class_sum, "one_class": one_class, "class_loop": class_loop}


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unlabelled", type=int, default=100)
    parser.add_argument("--labelled", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None, help="JSON file for the figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build()
    x = torch.rand(args.unlabelled + args.labelled, *SHAPE)
    y = torch.cat([torch.full((args.unlabelled,), -1), torch.randint(0, 10, (args.labelled,))])
    runs = steps(model, x, y)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.warmup + args.repeats):
        for name, step in runs.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    result: dict[str, object] = {
        "batch": {"unlabelled": args.unlabelled, "labelled": args.labelled},
        "median_ms": medians,
        "ratio_class_sum_to_one_class": medians["class_sum"] / medians["one_class"],
        "ratio_class_loop_to_class_sum": medians["class_loop"] / medians["class_sum"],
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
