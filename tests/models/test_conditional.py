"""models/conditional.py: the conditional VAE against torch.distributions and an exact log-marginal in float64; the
objective, the IW-NLL, the collapse monitor and annealing through ``VAE`` unchanged; the context's checks."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Trainer
from support.modules import trainer_kwargs
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal
from torch.utils.data import DataLoader, TensorDataset

from lightning_vae import VAE
from lightning_vae.callbacks import KLAnnealing, PosteriorCollapseMonitor
from lightning_vae.data import Batch
from lightning_vae.functional.nll import iw_nll
from lightning_vae.models import ConditionalVAEModel
from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder

SHAPE = (1, 4, 4)


def cvae(context_dim: int = 3, **kwargs) -> ConditionalVAEModel:
    return ConditionalVAEModel(
        ConditionalMLPEncoder(SHAPE, context_dim=context_dim, latent_dim=2, hidden_sizes=(8,)),
        ConditionalMLPDecoder(2, context_dim, SHAPE, hidden_sizes=(8,)),
        **kwargs,
    )


def reference_log_joint(model: ConditionalVAEModel, x: Tensor, z: Tensor, code: Tensor) -> Tensor:
    """log N(z; 0, I) + log Bernoulli(x; decoder(z, code)) with torch.distributions, per sample and example."""
    logits = torch.stack([model.decoder(z_s, code) for z_s in z])
    log_px = Independent(Bernoulli(logits=logits), 3).log_prob(x.expand_as(logits))
    return log_px + Independent(Normal(torch.zeros(2), torch.ones(2)), 1).log_prob(z)


@pytest.mark.parametrize(
    ("kwargs", "context", "code"),
    [
        ({"n_classes": 3}, torch.tensor([0, 2, 1]), torch.eye(3)[[0, 2, 1]]),
        ({"n_classes": 3}, torch.eye(3)[[0, 2, 1]], torch.eye(3)[[0, 2, 1]]),
        ({"n_classes": None}, torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 1.0], [3.0, 1.0, 0.0]]), None),
    ],
    ids=["labels", "one_hot_rows", "features"],
)
def test_log_joint_is_the_conditional_joint_of_torch_distributions(kwargs, context, code) -> None:
    model = cvae(**kwargs)
    x = torch.bernoulli(torch.rand(3, *SHAPE))
    z = torch.randn(5, 3, 2)
    expected = reference_log_joint(model, x, z, context.float() if code is None else code)
    torch.testing.assert_close(model.log_joint(x, z, context=context), expected)


def test_embedded_labels_reach_both_networks_through_the_embedding() -> None:
    model = cvae(context_dim=4, n_classes=3, embedding_dim=4)
    x, y = torch.bernoulli(torch.rand(3, *SHAPE)), torch.tensor([2, 0, 2])
    z = torch.randn(2, 3, 2)
    torch.testing.assert_close(
        model.log_joint(x, z, context=y), reference_log_joint(model, x, z, model.embedding.weight[y])
    )
    q = model.encode(x, context=y)
    loc, _ = model.encoder(x, model.embedding.weight[y])
    torch.testing.assert_close(q.mean, loc)


class LinearGaussian(nn.Module):
    """x = W z + b_y + noise: with W's columns orthogonal, q(z | x, y) below is the exact posterior."""

    def __init__(self, w: Tensor, b: Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)
        self.latent_dim, self.input_shape = w.shape[1], (w.shape[0],)


class ExactEncoder(LinearGaussian):
    def forward(self, x: Tensor, code: Tensor) -> tuple[Tensor, Tensor]:
        precision = 1.0 + (self.w**2).sum(0)  # diagonal: I + W^T W
        loc = ((x - code @ self.b) @ self.w) / precision
        return loc, (-precision.log()).expand_as(loc)


class LinearDecoder(LinearGaussian):
    def forward(self, z: Tensor, code: Tensor) -> Tensor:
        return z @ self.w.T + code @ self.b


def linear_gaussian_model() -> tuple[ConditionalVAEModel, Tensor, Tensor]:
    w = torch.linalg.qr(torch.randn(5, 2, dtype=torch.float64))[0] * torch.tensor([2.0, 0.5], dtype=torch.float64)
    b = torch.randn(3, 5, dtype=torch.float64)
    model = ConditionalVAEModel(ExactEncoder(w, b), LinearDecoder(w, b), likelihood="gaussian", n_classes=3)
    return model.double(), w, b


def test_iw_nll_is_minus_log_p_x_given_y_of_a_linear_gaussian_model_in_float64() -> None:
    """With the exact posterior every importance weight is p(x | y): the IW-NLL is exact for any k."""
    model, w, b = linear_gaussian_model()
    y = torch.tensor([0, 1, 2, 1])
    x = torch.randn(4, 5, dtype=torch.float64) * 2
    exact = -MultivariateNormal(b[y], w @ w.T + torch.eye(5, dtype=torch.float64)).log_prob(x)
    torch.testing.assert_close(iw_nll(model, x, n_samples=7, context=y), exact, rtol=1e-9, atol=1e-9)
    # The labels matter: another class gives another marginal.
    other = -MultivariateNormal(b[(y + 1) % 3], w @ w.T + torch.eye(5, dtype=torch.float64)).log_prob(x)
    torch.testing.assert_close(iw_nll(model, x, n_samples=3, context=(y + 1) % 3), other, rtol=1e-9, atol=1e-9)


def test_iw_nll_of_a_learned_posterior_is_the_float64_logsumexp_of_its_weights() -> None:
    model = cvae(n_classes=3).double()
    x, y = torch.bernoulli(torch.rand(4, *SHAPE, dtype=torch.float64)), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(3)
    estimate = iw_nll(model, x, n_samples=50, chunk_size=10_000, context=y)
    torch.manual_seed(3)
    with torch.no_grad():
        loc, log_var = model.encoder(x, torch.eye(3, dtype=torch.float64)[y])
        q = Independent(Normal(loc, (0.5 * log_var).exp()), 1)
        z = q.sample((50,))
        log_w = reference_log_joint(model, x, z, torch.eye(3, dtype=torch.float64)[y]) - q.log_prob(z)
    torch.testing.assert_close(estimate, -(torch.logsumexp(log_w, 0) - math.log(50)), rtol=1e-7, atol=1e-7)


def test_a_context_is_required_and_checked() -> None:
    model = cvae(n_classes=3)
    x = torch.rand(2, *SHAPE)
    with pytest.raises(ValueError, match="is conditional: pass a `context`"):
        model(x)
    with pytest.raises(ValueError, match=r"Expected labels in \[0, 3\), got values in \[0, 3\]"):
        model(x, context=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="Expected a `context` of batch size 2"):
        model(x, context=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match=r"one-hot rows \(B, 3\)"):
        model(x, context=torch.rand(2, 4))
    with pytest.raises(TypeError, match="Expected a floating feature tensor"):
        cvae(n_classes=None)(x, context=torch.tensor([[1, 2, 3], [1, 2, 3]]))
    with pytest.raises(ValueError, match="`embedding_dim` only with `n_classes`"):
        cvae(embedding_dim=3)
    with pytest.raises(ValueError, match="VampPrior"):
        cvae(n_classes=3, prior="vamp")


def test_the_unconditional_decode_of_vae_is_refused() -> None:
    with pytest.raises(AttributeError, match="has no `decode`"):
        VAE(model=cvae(n_classes=3)).decode(torch.zeros(2, 2))


def test_samples_follow_the_class_asked_for() -> None:
    model = cvae(n_classes=3)
    torch.manual_seed(0)
    one = model.sample(4, context=torch.tensor([2]))  # one context, repeated
    torch.manual_seed(0)
    four = model.sample(4, context=torch.full((4,), 2))
    torch.testing.assert_close(one, four)
    z = model.prior_sample(4)
    assert one.shape == (4, *SHAPE)
    assert not torch.equal(
        model.generative(z, context=torch.zeros(4, dtype=torch.long)).params,
        model.generative(z, context=torch.ones(4, dtype=torch.long)).params,
    )


def test_trains_through_vae_with_the_elbo_iw_nll_collapse_monitor_and_annealing(tmp_path) -> None:
    x = torch.bernoulli(torch.rand(16, *SHAPE))
    y = torch.randint(0, 3, (16,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    vae = VAE(model=cvae(n_classes=3), n_eval_samples=4)
    monitor = PosteriorCollapseMonitor(iw_samples=5)  # its IW-NLL is -log p(x | y): the batch's labels reach it
    annealing = KLAnnealing(length=4)
    trainer = Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor, annealing]))
    trainer.fit(vae, loader, loader)
    metrics = trainer.callback_metrics
    for key in ("val/elbo", "val/nll_iw", "val/kl", "train/beta", "collapse/nll_iw", "collapse/active_units"):
        assert torch.isfinite(metrics[key]), key
    assert 0.0 < float(metrics["train/beta"]) <= 1.0
    # The training loss is the ELBO of the conditional model on the batch's labels.
    vae.eval()
    terms = vae.objective.training_terms(vae.model, Batch(x, y), True, False)
    assert float(terms.loss) > 0
    assert vae.predict_step((x, y), 0).shape == (16, 2)
