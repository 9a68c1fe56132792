"""Full evaluations keep memory bounded: k = 5000 importance samples through the module, MI over a big batch.

Each check runs in a fresh subprocess and reads its peak resident memory (``ru_maxrss``) before and after the
evaluation; the growth must stay far below what the unchunked computation needs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PREAMBLE = """
import resource, torch
torch.manual_seed(0)
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def _growth_mb(body: str) -> tuple[float, str]:
    script = PREAMBLE + textwrap.dedent(body) + "\nprint('GROWTH', peak_mb() - before)\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("GROWTH")][-1]
    return float(line.split()[1]), done.stdout


def test_validation_nll_iw_at_k_5000_is_chunked() -> None:
    # Unchunked: 5000 x 64 decoder outputs of 784 logits are 1.0 GB before any intermediate.
    growth, out = _growth_mb(
        """
        from lightning.pytorch import Trainer
        from lightning_vae import VAE
        from lightning_vae.data import TensorDataModule
        from lightning_vae.nets import MLPDecoder, MLPEncoder
        vae = VAE(MLPEncoder((1, 28, 28), 20, hidden_sizes=(400,)), MLPDecoder(20, (1, 28, 28), hidden_sizes=(400,)),
                  n_eval_samples=5000)
        x = torch.bernoulli(torch.rand(64, 1, 28, 28))
        dm = TensorDataModule(x, val=x, batch_size=64)
        trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        before = peak_mb()
        metrics = trainer.validate(vae, datamodule=dm, verbose=False)[0]
        assert torch.isfinite(torch.tensor(metrics["val/nll_iw"]))
        print("NLL", metrics["val/nll_iw"], "ELBO", metrics["val/elbo"])
        """
    )
    assert growth < 300, f"peak memory grew by {growth:.0f} MB\n{out}"


def test_mutual_information_of_a_large_batch_keeps_no_b_by_b_matrix() -> None:
    # B = 8192: the B x B matrix of log-densities alone is 512 MB in float64.
    growth, out = _growth_mb(
        """
        from lightning_vae.distributions import DiagonalGaussian
        from lightning_vae.functional import mutual_information
        q = DiagonalGaussian(torch.randn(8192, 16), torch.randn(8192, 16) - 1)
        before = peak_mb()
        print("MI", float(mutual_information(q)))
        """
    )
    assert growth < 250, f"peak memory grew by {growth:.0f} MB\n{out}"


def test_one_default_chunk_size_for_the_importance_weighted_nll() -> None:
    """The metric, the functions and VAE's val/nll_iw decode the same number of (sample, example) pairs at once by
    default (the metric's default once took 10000: ~1.15 GB more than VAE's 2048 at k = 5000)."""
    import inspect

    from lightning_vae import VAE
    from lightning_vae.functional.nll import iw_log_likelihood, iw_nll
    from lightning_vae.metrics import ImportanceWeightedNLL

    defaults = {
        "VAE": inspect.signature(VAE).parameters["iw_chunk_size"].default,
        "ImportanceWeightedNLL": ImportanceWeightedNLL().chunk_size,
        "iw_nll": inspect.signature(iw_nll).parameters["chunk_size"].default,
        "iw_log_likelihood": inspect.signature(iw_log_likelihood).parameters["chunk_size"].default,
    }
    assert set(defaults.values()) == {2048}, defaults
