"""The ELBO objective (objective/elbo.py): its terms against torch.distributions, free bits and the capacity form,
the IWAE loss, numerics at the edges, and its training form: the diagonal-Gaussian arithmetic for models that declare
``fast_path``.

One training-step path (``VAE.training_step`` → ``objective.training_terms``): for a single diagonal-Gaussian group
under ``N(0, I)`` the ELBO computes its terms from the encoder's ``(loc, log_var)``; these tests hold it to the
general path (the model's pass and ``elbo_groups``): the same loss, KL and gradients; the same checks and errors;
the same run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import DistributionEncoder, tiny_vae, trainer_kwargs
from support.objective import DATA, make_vae, step
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from lightning_vae import VAE
from lightning_vae.data import Batch, TensorDataModule
from lightning_vae.distributions import BernoulliLikelihood, DiagonalGaussian, StandardNormal
from lightning_vae.nets import MLPDecoder, MLPEncoder
from lightning_vae.objective import ELBO, IWAE, ELBOSettings, elbo, make_objective
from lightning_vae.training.faults import NonFiniteError


class QuietTrainer:
    """The trainer attributes a training step reads, for a step whose values reach no logger."""

    def __init__(self) -> None:
        self.global_step, self.current_epoch, self.num_training_batches = 123, 4, 1000
        self._logger_connector = type("Connector", (), {"should_update_logs": False})()


def _quiet(vae: VAE) -> VAE:
    """``vae`` in the middle of an epoch, its shapes fixed, the divergence rule's scale set."""
    vae._trainer = QuietTrainer()  # type: ignore[assignment]
    vae._shapes_fixed = True
    vae.guard.load_state_dict({"scale": 1000.0, "calibrated": 1})
    return vae


@pytest.mark.parametrize("likelihood", sorted(DATA))
@pytest.mark.parametrize("beta", [1.0, 0.25])
@pytest.mark.parametrize("log_var_bias", [0.0, 13.0, -25.0], ids=["inside", "clamped-high", "clamped-low"])
def test_the_training_form_agrees_with_the_general_path(likelihood: str, beta: float, log_var_bias: float) -> None:
    vae = make_vae(likelihood, log_var_bias=log_var_bias, beta=beta)
    assert vae.model.fast_path
    x = DATA[likelihood]()
    for report in (False, True):
        fast, grads_fast = step(vae, x, fast=True, report=report)
        general, grads_general = step(vae, x, fast=False, report=report)
        torch.testing.assert_close(fast.loss, general.loss, rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(fast.kl, general.kl, rtol=2e-5, atol=2e-5)
        for a, b in zip(grads_fast, grads_general):
            torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)


def test_the_training_step_returns_the_loss_and_the_kl_for_callbacks() -> None:
    vae = _quiet(make_vae("bernoulli"))
    x = DATA["bernoulli"]()
    torch.manual_seed(3)
    out = vae.training_step(x, 17)
    assert out is not None and set(out) == {"loss", "kl"} and not out["kl"].requires_grad
    torch.manual_seed(3)
    general = vae.compute_terms(x, report=False)[0]
    torch.testing.assert_close(out["loss"], general.loss, rtol=1e-5, atol=1e-5)


class NarrowHeads(nn.Module):
    """An encoder whose outputs are float16 or bfloat16."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.dtype = MLPEncoder((1, 8, 8), latent_dim=4, hidden_sizes=(16,)), dtype

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_var = self.net(x)
        return loc.to(self.dtype), log_var.to(self.dtype)


@pytest.mark.parametrize(
    "encoder", [DistributionEncoder, lambda: NarrowHeads(torch.float16), lambda: NarrowHeads(torch.bfloat16)]
)
def test_other_encoder_outputs_train_in_float32_and_agree_with_the_general_path(encoder: Any) -> None:
    torch.manual_seed(0)
    vae = _quiet(VAE(encoder(), MLPDecoder(4, (1, 8, 8), hidden_sizes=(16,)), latent_dim=4))
    x = torch.rand(4, 1, 8, 8).round()
    torch.manual_seed(3)
    out = vae.training_step(x, 7)
    assert out is not None and torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
    out["loss"].backward()
    torch.manual_seed(3)
    general = vae.compute_terms(x, report=False)[0]
    torch.testing.assert_close(out["loss"], general.loss, rtol=1e-2, atol=1e-2)  # half-precision heads: their rounding


def test_a_non_finite_loss_raises_with_the_diagnosis() -> None:
    vae = _quiet(make_vae("bernoulli"))
    x = torch.rand(4, 1, 8, 8).round()
    with torch.no_grad():
        vae.model.decoder.head.bias[5] = float("nan")  # the data pass their check: the loss shows the fault
    with pytest.raises(NonFiniteError) as err:
        vae.training_step(x, 17)
    message = str(err.value)
    assert "global step 123 (epoch 4, batch 17)" in message
    assert "parameters ['model.decoder.head.bias']" in message and "already non-finite" in message
    assert "reconstruction term" in message and "resume from the last checkpoint" in message


def test_nan_data_in_any_cpu_batch_is_named_by_the_data_check() -> None:
    vae = _quiet(make_vae("bernoulli"))
    vae.data_check.seen = 17  # not on the accelerator schedule: the CPU checks every batch
    x = torch.rand(4, 1, 8, 8).round()
    x[2, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"1 NaN or infinite values.*global step 123, epoch 4, batch 17"):
        vae.training_step(x, 17)


def test_a_non_finite_kl_names_the_latent_dimension() -> None:
    vae = _quiet(make_vae("bernoulli"))
    with torch.no_grad():
        vae.model.encoder.head.weight[1].fill_(float("inf"))  # loc of latent dimension 1
    with pytest.raises(NonFiniteError, match=r"the KL term is non-finite in latent dimensions \[1\]"):
        vae.training_step(torch.rand(4, 1, 8, 8).round(), 9)


def test_a_run_is_the_same_through_the_training_form_and_the_general_path(tmp_path: Path) -> None:
    """Two epochs of 16 batches: the weights at the end equal those of the same run through the general path."""
    data = torch.rand(128, 1, 8, 8).round()

    def fit(fast: bool) -> dict[str, Tensor]:
        torch.manual_seed(0)
        vae = tiny_vae()
        trainer = Trainer(
            **trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=None, limit_val_batches=0),
            log_every_n_steps=5,
            num_sanity_val_steps=0,
        )
        dm = TensorDataModule(data, batch_size=8, seed=0)
        if fast:
            trainer.fit(vae, datamodule=dm)
        else:
            with mock.patch.object(type(vae.model), "fast_path", property(lambda self: False)):
                trainer.fit(vae, datamodule=dm)
        return {k: v.clone() for k, v in vae.state_dict().items()}

    fast, general = fit(True), fit(False)
    assert fast.keys() == general.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], general[name], rtol=1e-5, atol=1e-6, msg=name)


def test_settings_are_one_checked_value() -> None:
    """Checked where made: construction, a setter, a checkpoint's state; the defaults written once."""
    objective = ELBO()
    assert objective.settings == ELBOSettings()
    objective.beta = 0.0
    assert objective.settings.beta == 0.0
    for bad in (-1.0, float("nan"), "x"):
        with pytest.raises((ValueError, TypeError), match="beta"):
            objective.beta = bad
    with pytest.raises(ValueError, match="beta"):
        objective.load_state({"beta": -2.0})
    assert objective.beta == 0.0  # a refused value changes nothing
    with pytest.raises(ValueError, match="single-sample ELBO"):
        ELBO(free_bits=0.5, n_samples=3)
    with pytest.raises(ValueError, match="per-group KL weights"):
        ELBO(n_samples=2).group_betas = {"z": 0.5}
    with pytest.raises(ValueError, match="capacity_gamma"):
        ELBOSettings(capacity_gamma=0.0)


def test_objectives_by_name_and_their_errors() -> None:
    assert isinstance(make_objective("elbo"), ELBO) and isinstance(make_objective("iwae"), IWAE)
    with pytest.raises(ValueError, match=r"one of \[.*'elbo'.*'iwae'.*\].*got 'nope'"):
        make_objective("nope")
    with pytest.raises(TypeError, match="a name or a lightning_vae.objective.Objective"):
        make_objective(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ELBO's arguments \['beta'\] only with objective=None or 'elbo'"):
        tiny_vae(objective="iwae", beta=2.0)
    assert tiny_vae(objective="iwae").n_samples == 5


def test_the_training_form_keeps_the_checks() -> None:
    model = make_vae("bernoulli").model
    bad = VAE(MLPEncoder((1, 8, 8), latent_dim=4), MLPDecoder(4, (64,))).model
    with pytest.raises(ValueError, match=r"decoder returned a tensor of shape \(2, 64\)"):
        ELBO().training_terms(bad, Batch(torch.rand(2, 1, 8, 8).round()), report=False, check=True)
    terms = ELBO().training_terms(model, Batch(torch.rand(2, 1, 8, 8).round()), report=True, check=True)
    assert terms.elbo is not None and terms.kl_per_dim is not None


# ---------------------------------------------------------------- the ELBO's terms against torch.distributions
def _batch(b: int = 16, d: int = 6, dx: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randint(0, 2, (b, dx)).float(), torch.randn(b, d), torch.randn(b, d)


def test_elbo_terms_match_torch_distributions() -> None:
    x, loc, log_var = _batch()
    q = DiagonalGaussian(loc, log_var)
    z = q.rsample((1,))
    logits = torch.randn(1, 16, 10)
    terms = elbo(x, q, z, logits, BernoulliLikelihood(), StandardNormal(6), beta=2.5)
    recon = -Bernoulli(logits=logits[0]).log_prob(x).sum(-1).mean()
    kl = kl_divergence(
        Independent(Normal(loc, torch.exp(0.5 * log_var)), 1), Independent(Normal(0.0, torch.ones(6)), 1)
    )
    torch.testing.assert_close(terms.recon, recon)
    torch.testing.assert_close(terms.kl, kl.mean())
    torch.testing.assert_close(terms.elbo, -(recon + kl.mean()))
    torch.testing.assert_close(terms.loss, recon + 2.5 * kl.mean())
    torch.testing.assert_close(terms.kl_per_dim.sum(), kl.mean())
    assert terms.iwae is None and terms.log_weights.shape == (1, 16)


def test_free_bits_keeps_the_raw_kl_reported() -> None:
    x, loc, log_var = _batch()
    q = DiagonalGaussian(0.01 * loc, log_var.clamp(-0.01, 0.01))
    lik, p = BernoulliLikelihood(), StandardNormal(6)
    z = q.rsample((1,))
    plain = elbo(x, q, z, torch.zeros(1, 16, 10), lik, p)
    fb = elbo(x, q, z, torch.zeros(1, 16, 10), lik, p, free_bits=0.5)
    torch.testing.assert_close(fb.kl, plain.kl)  # raw KL unchanged
    torch.testing.assert_close(fb.kl_penalty, torch.tensor(6 * 0.5))  # every dimension under λ
    torch.testing.assert_close(fb.elbo, plain.elbo)


def test_capacity_form() -> None:
    x, loc, log_var = _batch()
    q = DiagonalGaussian(loc, log_var)
    terms = elbo(
        x,
        q,
        q.rsample((1,)),
        torch.zeros(1, 16, 10),
        BernoulliLikelihood(),
        StandardNormal(6),
        capacity=2.0,
        capacity_gamma=10.0,
    )
    torch.testing.assert_close(terms.loss, terms.recon + 10.0 * (terms.kl - 2.0).abs())


def test_iwae_loss_is_the_negative_bound_at_beta_one() -> None:
    vae = tiny_vae(n_samples=5)
    terms, _ = vae.compute_terms(torch.rand(8, 1, 8, 8).round())
    torch.testing.assert_close(terms.loss, -terms.iwae)
    manual = torch.logsumexp(terms.log_weights, 0) - math.log(5)
    torch.testing.assert_close(terms.iwae, manual.mean())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_encoder_outputs_give_finite_loss_and_gradients(dtype: torch.dtype) -> None:
    x = torch.randint(0, 2, (4, 10)).float()
    loc = torch.tensor([[0.0, 5.0, -5.0]] * 4, dtype=dtype, requires_grad=True)
    log_var = torch.tensor([[1e4, -1e4, 0.0]] * 4, dtype=dtype, requires_grad=True)
    logits = (torch.randn(1, 4, 10) * 1e4).to(dtype).requires_grad_(True)
    q = DiagonalGaussian(loc, log_var)
    terms = elbo(x, q, q.rsample((1,)), logits, BernoulliLikelihood(), StandardNormal(3), free_bits=0.1)
    terms.loss.backward()
    assert torch.isfinite(terms.loss)
    for t in (loc, log_var, logits):
        assert torch.isfinite(t.grad).all()


def test_elbo_validates_its_arguments() -> None:
    x, loc, log_var = _batch()
    q = DiagonalGaussian(loc, log_var)
    args = (x, q, q.rsample((3,)), torch.zeros(3, 16, 10), BernoulliLikelihood(), StandardNormal(6))
    with pytest.raises(ValueError, match="single-sample ELBO.*got 3"):
        elbo(*args, free_bits=0.5)
    with pytest.raises(ValueError, match="`beta` to be a finite float >= 0"):
        elbo(*args, beta=-1.0)
    with pytest.raises(ValueError, match=r"shape \(k, B, D\)"):
        elbo(x, q, q.rsample(), torch.zeros(16, 10), BernoulliLikelihood(), StandardNormal(6))


@pytest.mark.parametrize("settings", [{}, {"beta": 0.3}, {"free_bits": 0.2}, {"capacity": 1.0}, {"n": 4}])
def test_unreported_steps_give_the_same_loss_and_gradients(settings: dict) -> None:
    """``report=False`` (training steps that log nothing) changes no loss and no gradient: bit for bit."""
    from lightning_vae.distributions import BernoulliLikelihood, DiagonalGaussian, StandardNormal
    from lightning_vae.objective import elbo_groups

    n = settings.pop("n", 1)
    results = []
    for report in (True, False):
        torch.manual_seed(0)
        loc = torch.randn(6, 3, requires_grad=True)
        log_var = torch.randn(6, 3, requires_grad=True)
        q = DiagonalGaussian(loc, log_var)
        z = q.rsample((n,))
        logits = z @ torch.ones(3, 5)
        x = torch.rand(6, 5).round()
        terms = elbo_groups(x, {"z": q}, {"z": z}, logits, BernoulliLikelihood(), {"z": StandardNormal(3)},
                            report=report, **settings)  # fmt: skip
        terms.loss.backward()
        results.append((terms, loc.grad, log_var.grad))
    (full, *grads_full), (lean, *grads_lean) = results
    torch.testing.assert_close(lean.loss, full.loss, rtol=0, atol=0)
    for a, b in zip(grads_full, grads_lean):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert full.elbo is not None and full.kl_per_dim is not None
    assert lean.elbo is None and lean.kl_per_dim is None and lean.kl_elementwise is not None
