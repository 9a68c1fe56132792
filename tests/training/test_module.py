"""VAE: outputs, batch formats, bad input, training on shapes and real MNIST, checkpoint round trips."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import DistributionEncoder, PlainDecoder, PlainEncoder, tiny_vae, trainer_kwargs
from support.objective import DATA, SETTINGS, make_vae, step

from lightning_vae import VAE
from lightning_vae.data import Batch, MNISTDataModule, ShapesDataModule, TensorDataModule
from lightning_vae.distributions import GaussianLikelihood, MixtureOfGaussiansPrior
from lightning_vae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder


def test_forward_returns_named_outputs() -> None:
    vae = tiny_vae()
    out = vae(torch.rand(5, 1, 8, 8), n_samples=3)
    assert out.z.shape == (3, 5, 4) and out.decoder_output.shape == (3, 5, 1, 8, 8)
    assert out.posterior.event_shape == (4,) and out.prior.event_shape == (4,)
    assert vae.sample(6).shape == (6, 1, 8, 8)
    assert vae.reconstruct(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    "batch",
    [
        torch.rand(4, 1, 8, 8).round(),
        (torch.rand(4, 1, 8, 8).round(), torch.zeros(4)),
        {"image": torch.rand(4, 1, 8, 8).round(), "label": torch.zeros(4)},
    ],
)
def test_batches_as_tensor_tuple_or_dict(batch) -> None:
    vae = tiny_vae()
    loss = vae.compute_terms(vae.read_batch(batch).x)[0].loss
    assert torch.isfinite(loss)


def test_unknown_batch_formats_are_named() -> None:
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"one of \('x', 'image'.*got keys \['foo'\]"):
        vae.read_batch({"foo": torch.zeros(1)})
    with pytest.raises(TypeError, match="got str"):
        vae.read_batch("nope")


def test_bad_input_gives_errors_that_name_the_problem() -> None:
    assert tiny_vae(beta=0.0).beta == 0.0  # one rule everywhere: >= 0 (construction, setter, checkpoint)
    with pytest.raises(ValueError, match="`beta` to be a finite float >= 0, got -1"):
        tiny_vae(beta=-1.0)
    with pytest.raises(ValueError, match="needs an encoder and decoder"):
        VAE()
    bad_decoder = VAE(MLPEncoder((1, 8, 8), latent_dim=4), MLPDecoder(4, (64,)))
    with pytest.raises(ValueError, match=r"decoder returned a tensor of shape \(2, 64\).*\(batch=2, \*\(1, 8, 8\)\)"):
        bad_decoder.compute_terms(torch.rand(2, 1, 8, 8).round())
    x = torch.rand(2, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        tiny_vae().compute_terms(x)
    with pytest.raises(ValueError, match=r"bernoulli likelihood expects targets in \[0, 1\]"):
        tiny_vae().compute_terms(torch.full((2, 1, 8, 8), 255.0))
    with pytest.raises(ValueError, match="one of"):
        tiny_vae(likelihood="poisson")
    with pytest.raises(ValueError, match=r"`n_samples` to be 1 for free bits or the capacity objective.*got 4"):
        tiny_vae(n_samples=4, free_bits=0.5)
    vae = tiny_vae()
    with pytest.raises(ValueError, match="`beta` to be a finite float >= 0"):
        vae.beta = -0.5
    vae.beta = 0.0  # annealing may start from zero


@pytest.mark.parametrize(
    ("likelihood", "params_per_element", "data"),
    [
        ("bernoulli", 1, lambda: torch.rand(4, 1, 8, 8).round()),
        ("gaussian", 1, lambda: torch.randn(4, 1, 8, 8)),
        ("gaussian_learned", 1, lambda: torch.randn(4, 1, 8, 8)),
        ("gaussian_per_dim", 1, lambda: torch.randn(4, 1, 8, 8)),
        ("laplace", 1, lambda: torch.randn(4, 1, 8, 8)),
        ("categorical", 256, lambda: torch.randint(0, 256, (4, 1, 8, 8)) / 255),
        ("logistic_mixture", 15, lambda: torch.randint(0, 256, (4, 1, 8, 8)) / 255),
    ],
)
@pytest.mark.parametrize("prior", ["standard_normal", "learnable", "mixture", "vamp"])
def test_every_likelihood_and_prior_trains(likelihood: str, params_per_element: int, data, prior: str) -> None:
    vae = VAE(
        MLPEncoder((1, 8, 8), latent_dim=3, hidden_sizes=(16,)),
        MLPDecoder(3, (1, 8, 8), hidden_sizes=(16,), params_per_element=params_per_element),
        likelihood=likelihood,  # type: ignore[arg-type]
        prior=prior,  # type: ignore[arg-type]
        prior_components=4,
    )
    opt = vae.configure_optimizers()
    x = data()
    before = [p.detach().clone() for p in vae.parameters()]
    loss = vae.compute_terms(x)[0].loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(b, p) for b, p in zip(before, vae.parameters()))
    assert changed == len(before), "every parameter (nets, prior, likelihood scale) receives a gradient"


def test_prior_and_likelihood_modules_are_accepted() -> None:
    vae = tiny_vae(prior=MixtureOfGaussiansPrior(4, n_components=3), likelihood=GaussianLikelihood("global"))
    assert isinstance(vae.prior, MixtureOfGaussiansPrior) and isinstance(vae.likelihood, GaussianLikelihood)
    assert vae.hparams["prior"]["class_path"].endswith("MixtureOfGaussiansPrior")


def _val_loss(trainer: Trainer, vae: VAE, dm) -> float:
    return float(trainer.validate(vae, datamodule=dm, verbose=False)[0]["val/loss"])


def test_short_fit_on_shapes_lowers_validation_loss(tmp_path: Path) -> None:
    dm = ShapesDataModule(image_size=28, n_train=1024, n_val=256, batch_size=64)
    vae = VAE(ConvEncoder(1, 28, latent_dim=6), ConvDecoder(6, 1, 28), likelihood="bernoulli")
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_train_batches=16, limit_val_batches=4, max_epochs=2))
    before = _val_loss(trainer, vae, dm)
    trainer.fit(vae, datamodule=dm)
    after = _val_loss(trainer, vae, dm)
    assert after < before - 50, (before, after)


def test_short_fit_on_real_mnist_lowers_validation_loss(tmp_path: Path, mnist_dir: Path) -> None:
    dm = MNISTDataModule(str(mnist_dir), batch_size=128, val_size=1000, train_subset=4096)
    vae = VAE(MLPEncoder((1, 28, 28), latent_dim=20), MLPDecoder(20, (1, 28, 28)), likelihood="bernoulli")
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_train_batches=32, limit_val_batches=4, max_epochs=1))
    before = _val_loss(trainer, vae, dm)
    trainer.fit(vae, datamodule=dm)
    after = _val_loss(trainer, vae, dm)
    assert before > 500 and after < 250, (before, after)  # untrained ~543 nats (784 ln 2); trained far below


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    dm = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=16)
    vae = tiny_vae(likelihood="gaussian_learned", prior="learnable")
    trainer = Trainer(**trainer_kwargs(tmp_path, enable_checkpointing=True, max_epochs=1))
    trainer.fit(vae, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = VAE.load_from_checkpoint(path)  # no networks passed: they are rebuilt from hparams
    vae.eval(), loaded.eval()
    x, z = torch.rand(5, 1, 8, 8).round(), torch.randn(5, 4)
    torch.testing.assert_close(loaded.encode(x).mean, vae.encode(x).mean, rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(z), vae.decode(z), rtol=0, atol=0)
    torch.testing.assert_close(loaded.likelihood.sigma, vae.likelihood.sigma, rtol=0, atol=0)
    torch.testing.assert_close(loaded.prior().loc, vae.prior().loc, rtol=0, atol=0)
    assert type(loaded.encoder) is MLPEncoder and loaded.hparams["likelihood"] == "gaussian_learned"


def test_user_networks_train_and_reload_when_passed_again(tmp_path: Path) -> None:
    dm = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=16)
    vae = VAE(encoder=PlainEncoder(), decoder=PlainDecoder(), likelihood="bernoulli", beta=1.0)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(vae, datamodule=dm)
    path = tmp_path / "user.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(ValueError, match=r"load_from_checkpoint\(path, encoder=..., decoder=...\)"):
        VAE.load_from_checkpoint(path)
    loaded = VAE.load_from_checkpoint(path, encoder=PlainEncoder(), decoder=PlainDecoder())
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(loaded.encode(x).mean, vae.encode(x).mean)
    assert vae.prior.latent_dim == 4  # learned from the first posterior
    # A reloaded model knows its latent size and data shape from the checkpoint: it samples before any encode.
    assert loaded.prior.latent_dim == 4 and loaded.data_shape == (1, 8, 8)
    assert loaded.sample(5).shape == (5, 1, 8, 8)


def test_sampling_with_an_encoder_without_latent_dim_learns_the_size_from_the_data_shape() -> None:
    vae = VAE(encoder=PlainEncoder(), decoder=PlainDecoder(), data_shape=(1, 8, 8))
    assert vae.sample(3).shape == (3, 1, 8, 8) and vae.prior.latent_dim == 4
    with pytest.raises(ValueError, match=r"latent size is unknown.*latent_dim=\.\.\."):
        VAE(encoder=PlainEncoder(), decoder=PlainDecoder()).sample(2)


def test_predict_returns_latent_means(tmp_path: Path) -> None:
    data = torch.rand(20, 1, 8, 8).round()
    vae = tiny_vae()
    trainer = Trainer(**trainer_kwargs(tmp_path))
    preds = trainer.predict(vae, torch.utils.data.DataLoader(data, batch_size=8))
    means = torch.cat(preds)
    torch.testing.assert_close(means, vae.encode(data).mean.detach())


def test_training_logs_the_documented_keys(tmp_path: Path) -> None:
    dm = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=16)
    vae = tiny_vae(n_eval_samples=4)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(vae, datamodule=dm)
    keys = set(trainer.callback_metrics)
    expected = {"train/loss", "train/elbo", "train/recon", "train/kl", "train/beta", "train/free_bits"}
    expected |= {"val/loss", "val/elbo", "val/recon", "val/kl", "val/nll_iw", "val/bits_per_dim"}
    assert expected <= keys, expected - keys
    # -ELBO >= IW-NLL estimate (k=4) on the same validation data
    assert float(trainer.callback_metrics["val/nll_iw"]) <= float(-trainer.callback_metrics["val/elbo"]) + 0.5


def test_logged_step_values_marked_read_change_nothing_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a logged step its values leave Lightning's per-batch walk (``adapters.retire_step_logs``): the loggers,
    ``callback_metrics`` and the progress bar get exactly what they get without it, at every logging step."""
    import csv

    from lightning.pytorch import seed_everything
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    import lightning_vae.training.module as module

    def fit(name: str) -> tuple[list[dict[str, str]], dict[str, float], dict[str, float]]:
        seed_everything(3, verbose=False)
        loader = DataLoader(TensorDataset(torch.rand(56, 1, 8, 8).round()), batch_size=8)  # 7 batches
        kwargs = trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=None, limit_val_batches=0)
        kwargs.update(logger=CSVLogger(tmp_path, name=name), log_every_n_steps=3)
        trainer = Trainer(**kwargs)
        trainer.fit(tiny_vae(), train_dataloaders=loader)
        with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        floats = lambda d: {k: float(v) for k, v in d.items() if k.startswith("train/")}  # noqa: E731
        return rows, floats(trainer.callback_metrics), floats(trainer.progress_bar_metrics)

    real, counts = module.retire_step_logs, []
    monkeypatch.setattr(module, "retire_step_logs", lambda trainer: counts.append(real(trainer)) or counts[-1])
    marked = fit("marked")
    assert counts and max(counts) >= 5  # loss, recon, kl, elbo and the weights, after each logged step
    monkeypatch.setattr(module, "retire_step_logs", lambda trainer: 0)
    walked = fit("walked")
    assert marked == walked
    rows = marked[0]
    assert [int(r["step"]) for r in rows] == [2, 5, 8, 11]  # every third of the 14 steps
    assert all(r["train/kl"] and r["train/recon"] and r["train/loss"] for r in rows)
    assert {"train/loss", "train/kl", "train/recon", "train/elbo", "train/beta"} <= set(marked[1])
    assert set(marked[2]) == {"train/loss"}


def test_iwae_training_and_lr_scheduler(tmp_path: Path) -> None:
    from functools import partial

    dm = TensorDataModule(torch.rand(64, 1, 8, 8).round(), batch_size=16)
    vae = tiny_vae(n_samples=4, lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    trainer = Trainer(**trainer_kwargs(tmp_path, max_epochs=2))
    trainer.fit(vae, datamodule=dm)
    assert "train/iwae" in trainer.callback_metrics
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)


# ---------------------------------------------------------------- module_fast_path
@pytest.mark.parametrize("likelihood", sorted(DATA))
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()) or "plain")
@pytest.mark.parametrize("skip_clamp", [False, True], ids=["clamped", "clamp-skipped"])
def test_fast_and_general_paths_agree(
    likelihood: str, settings: dict, skip_clamp: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same loss, reported values and gradients from both paths.

    With the soft clamp applied on both paths they agree to 1e-6. Where the fast path skips the clamp (CPU, every
    log-variance in ``IDENTITY_RANGE``) its log-variances differ from the clamped ones by float32 rounding (~2e-6 at
    most), which the capacity weight multiplies: the tolerance scales with it.
    """
    from lightning_vae.distributions import posteriors

    if not skip_clamp:
        monkeypatch.setattr(posteriors, "IDENTITY_RANGE", (math.inf, -math.inf))
    vae = make_vae(likelihood, **settings)
    x = DATA[likelihood]()
    tol = 1e-6 * (max(1.0, settings.get("capacity_gamma", 1.0)) if skip_clamp else 1.0)
    for report in (True, False):
        general, grads_general = step(vae, x, fast=False, report=report)
        fast, grads_fast = step(vae, x, fast=True, report=report)
        for name in ("loss", "recon", "kl", "kl_penalty", "elbo", "kl_per_dim", "log_weights"):
            a, b = getattr(general, name), getattr(fast, name)
            assert (a is None) == (b is None), name
            if a is not None:
                torch.testing.assert_close(b, a, rtol=tol, atol=tol, msg=name)
        assert len(grads_general) == len(grads_fast) > 0
        for a, b in zip(grads_general, grads_fast):
            torch.testing.assert_close(b, a, rtol=tol, atol=tol)


def test_the_fast_path_is_taken_only_where_it_applies() -> None:
    x = torch.rand(4, 1, 8, 8).round()
    cases = {
        "standard normal, (loc, log_var) encoder": (tiny_vae(), True),
        "learnable prior": (tiny_vae(prior="learnable"), False),
        "mixture prior": (tiny_vae(prior="mixture"), False),
        "importance samples": (tiny_vae(n_samples=3), None),
    }

    cases["encoder returning a distribution"] = (
        VAE(DistributionEncoder(), MLPDecoder(4, (1, 8, 8), hidden_sizes=(16,)), latent_dim=4),
        False,
    )
    for name, (vae, expected) in cases.items():
        if expected is not None:  # the model declares whether the ELBO's arithmetic applies
            assert vae.model.fast_path is expected or name == "encoder returning a distribution", name
        terms = vae.objective.training_terms(vae.model, Batch(x), True, check=True)
        assert torch.isfinite(terms.loss), name
    # After an encoder that returned a distribution, later steps stay on the general path and still train.
    vae = cases["encoder returning a distribution"][0]
    assert vae.objective._distribution_encoder
    assert torch.isfinite(vae.objective.training_terms(vae.model, Batch(x), False, check=False).loss)


def test_the_fast_path_keeps_the_data_and_shape_checks() -> None:
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"bernoulli likelihood expects targets in \[0, 1\]"):
        vae.training_step(torch.full((2, 1, 8, 8), 255.0), 0)
    bad = VAE(MLPEncoder((1, 8, 8), latent_dim=4), MLPDecoder(4, (64,)))
    with pytest.raises(ValueError, match=r"decoder returned a tensor of shape \(2, 64\)"):
        bad.training_step(torch.rand(2, 1, 8, 8).round(), 0)


def test_the_data_check_after_the_forward_pass_stops_bad_data_before_any_update(tmp_path: Path) -> None:
    # 8-bit pixels (0..255) in the fourth batch with a Bernoulli likelihood: the check, which now runs after the
    # forward pass, still raises before that batch's backward pass and optimizer step.
    from lightning.pytorch import Callback

    class CountSteps(Callback):
        def __init__(self) -> None:
            self.steps = 0

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            self.steps += 1

    x = torch.rand(32, 1, 8, 8).round()
    x[12:16] *= 255
    counter = CountSteps()
    vae = tiny_vae()
    trainer = Trainer(**trainer_kwargs(tmp_path, callbacks=[counter], limit_train_batches=8, max_epochs=1))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)
    with pytest.raises(ValueError, match=r"expects targets in \[0, 1\], got values in \[0, 255\].*batch 3"):
        trainer.fit(vae, loader)
    assert counter.steps == 3


def test_a_forward_pass_that_fails_on_bad_data_reports_the_data(tmp_path: Path) -> None:
    # A categorical likelihood indexes its logits by the pixel value: 2.0 is outside its 256 bins, and the forward
    # pass fails before the check could run; the error that reaches the user names the data, not the index.
    vae = tiny_vae(likelihood="categorical")
    x = torch.full((4, 1, 8, 8), 2.0)
    vae._trainer = None
    with pytest.raises(ValueError, match=r"categorical"):
        vae.training_step(x, 0)


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_nan_data_that_breaks_a_users_distribution_encoder_is_skipped_or_named(tmp_path: Path, policy: str) -> None:
    # As in a user's pipeline: the encoder returns torch's Normal, whose argument check refuses the NaN parameters
    # that a NaN pixel in batch 3 produces, so the forward pass fails before any loss exists. Under "skip" the step
    # is dropped like any non-finite step (training goes on, nothing changes for that batch); under "raise" the
    # error names the data, not torch's constraint.
    from lightning_vae.training import NonFiniteError

    x = torch.rand(32, 1, 8, 8).round()
    x[13, 0, 0, 0] = float("nan")
    vae = VAE(DistributionEncoder(), MLPDecoder(4, (1, 8, 8), hidden_sizes=(16,)), on_nonfinite=policy)
    trainer = Trainer(**trainer_kwargs(tmp_path, limit_train_batches=8, max_epochs=1))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)
    if policy == "raise":
        with pytest.raises(NonFiniteError, match=r"1 NaN or infinite values.*global step 3, epoch 0, batch 3"):
            trainer.fit(vae, loader)
        return
    with pytest.warns(UserWarning, match=r"(?s)Non-finite loss \(nan\) at global step 3 .*Step skipped"):
        trainer.fit(vae, loader)
    assert trainer.global_step == 8 and vae.guard.skipped_in_row == 0
    assert all(torch.isfinite(p).all() for p in vae.parameters())
