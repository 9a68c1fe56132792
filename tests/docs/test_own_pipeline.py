"""The README's "Use it from your own pipeline" walkthrough runs as written, and does what it says."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support.images import decode_png
from support.paths import ROOT

SECTION = "### Walkthrough: your data, your encoder, your module, any logger"


def walkthrough() -> tuple[list[str], list[str]]:
    """The Python blocks of the walkthrough, in order, and the ```text blocks (printed output shown to the reader)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.index("\n## ", start)
    section = readme[start:end]
    return re.findall(r"```python\n(.*?)```", section, re.S), re.findall(r"```text\n(.*?)```", section, re.S)


def test_the_walkthrough_has_the_promised_parts() -> None:
    python, _ = walkthrough()
    code = "\n".join(python)
    assert len(python) == 4
    assert "LightningDataModule" in code and '{"image": image, "label"' in code  # own data module, dict batches
    assert "-> Independent:" in code  # own encoder returning a torch.distributions distribution
    assert "class MyVAE(LightningModule)" in code and "self.beta" in code and "KLAnnealing(" in code
    assert "CSVLogger(" in code and "from lightning_vae.metrics import" in code


def test_the_walkthrough_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python, texts = walkthrough()
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_walkthrough"}
    printed = []
    for block in python:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, "README.md (walkthrough)", "exec"), namespace)  # noqa: S102 - the README's own code
        printed.append(out.getvalue())

    # 2. The VAE with the user's encoder trained and was watched; the views went to the CSVLogger's folder.
    results, listing = printed[1].strip().splitlines()[-2:]
    metrics = eval(results)  # noqa: S307 - a dict the block printed
    assert {"val/elbo", "val/kl", "collapse/active_units", "collapse/mutual_info"} <= set(metrics)
    run = tmp_path / "logs" / "bars" / "version_0"
    # 512 examples / 64 per batch: a validation every 8 steps, its views at the step of its scalars in metrics.csv
    steps = [8 * epoch - 1 for epoch in range(1, 6)]
    with open(run / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r.get("val/elbo")] == steps
    for tag in ("images/reconstructions", "images/samples", "collapse/kl_per_dim_heatmap"):
        files = sorted((run / tag).glob("*.png"))
        assert [f.name for f in files] == [f"step_{s:06d}.png" for s in steps], tag
        assert decode_png(files[-1].read_bytes()).ndim == 3
    with open(run / "collapse" / "kl_per_dim.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["stage", "step", "0", "1", "2", "3"] and [int(r[1]) for r in rows[1:]] == steps
    assert "val/elbo" in (run / "metrics.csv").read_text().splitlines()[0]

    # The listing printed is the folder, and the README's sample of it names real files.
    listing = eval(listing)  # noqa: S307
    assert listing == sorted(
        p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file() and "checkpoints" not in p.parts
    )
    shown = re.findall(r"'([^']+)'", texts[0])
    assert shown and set(shown) <= set(listing)

    # 3. The hand-written module took β and λ from the callbacks, and the monitor read its validation outputs.
    model = namespace["model"]
    assert (model.beta, model.free_bits) == (1.0, 0.1)
    # The block's own line is its last (with `rich` installed, Lightning prints its model summary to stdout too).
    assert re.fullmatch(r"beta 1.0, free bits 0.1 nats, \d active units", printed[2].strip().splitlines()[-1])
    assert (tmp_path / "logs" / "my_vae" / "version_0" / "collapse" / "kl_per_dim.csv").is_file()

    # 4. The plain-loop metrics agree with a NumPy reference on the same model and data.
    vae, data = namespace["vae"], namespace["BarsData"]()
    x = torch.cat([batch["image"] for batch in data.val_dataloader()])
    with torch.no_grad():
        q = vae.encode(x)
    mean = q.mean.double().numpy()
    var = q.variance.double().numpy()
    active = int((mean.var(axis=0, ddof=1) > 0.01).sum())  # Burda et al. 2015, threshold 0.01
    kl = (0.5 * (var + mean**2 - 1 - np.log(var))).mean(axis=0)
    numbers = re.match(
        r"(\d+) active units, I\(x; z\) = ([\d.]+) nats, KL per dimension \[([^\]]+)\], NLL ([\d.]+) nats", printed[3]
    )
    assert numbers is not None, printed[3]
    assert int(numbers.group(1)) == active
    np.testing.assert_allclose([float(v) for v in numbers.group(3).split()], kl, atol=0.006)
    elbo = -metrics["val/elbo"]
    assert 0 < float(numbers.group(4)) <= elbo + 0.5  # the IW bound is tighter than the ELBO (up to noise)
