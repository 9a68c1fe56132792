"""Bits/dim of a logistic-mixture VAE on MNIST grey levels: the exact per-bin masses against the PixelCNN++ formula.

Trains a small VAE (conv or PixelCNN decoder, 5 logistic components, latent 16) on 8-bit MNIST for ``steps``
Adam steps (batch 64, lr 1e-3, one thread), then evaluates the ELBO on the first 1,000 test images with the
package's likelihood (exact log-space bin masses, edge bins exact) and with the PixelCNN++ formula (Salimans et al.
2017: CDF difference, and density x bin width where a bin's mass is below 1e-5), on the same decoder outputs.

    python benchmarks/logistic_mixture_bpd.py conv 3000
    python benchmarks/logistic_mixture_bpd.py pixelcnn 2000

MNIST is read from $LIGHTNING_VAE_MNIST_DIR (default: ../shared/data/mnist beside the checkout).
"""

import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_vae import VAE
from lightning_vae.data.mnist import load_mnist
from lightning_vae.distributions import DiscretizedLogisticMixtureLikelihood
from lightning_vae.nets import ConvDecoder, ConvEncoder, PixelCNNDecoder

torch.set_num_threads(1)
torch.manual_seed(0)
MNIST = os.environ.get("LIGHTNING_VAE_MNIST_DIR", str(Path(__file__).resolve().parents[2] / "shared/data/mnist"))


def pixelcnnpp(x, params):
    """The PixelCNN++ per-element log-probability (Salimans et al. 2017), for comparison."""
    logits, means, log_scales = params.chunk(3, 1)
    log_scales = log_scales.clamp(min=-7.0)
    x = (2 * x - 1).unsqueeze(1)
    h = 1 / 255
    inv_s = torch.exp(-log_scales)
    c = x - means
    plus_in, min_in = inv_s * (c + h), inv_s * (c - h)
    lcp = plus_in - F.softplus(plus_in)
    lom = -F.softplus(min_in)
    cd = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid = inv_s * c
    lpm = mid - log_scales - 2 * F.softplus(mid) + math.log(2 * h)
    lm = torch.where(cd > 1e-5, torch.log(cd.clamp(min=1e-12)), lpm)
    lp = torch.where(x < -0.999, lcp, torch.where(x > 0.999, lom, lm))
    return torch.logsumexp(lp + torch.log_softmax(logits, 1), 1)


kind, steps = sys.argv[1], int(sys.argv[2])
xtr, _ = load_mnist(MNIST, "train")
xte, _ = load_mnist(MNIST, "test")
xte = xte[:1000]
lik = DiscretizedLogisticMixtureLikelihood(5)
D = 16
enc = ConvEncoder(1, 28, latent_dim=D)
if kind == "conv":
    dec = ConvDecoder(D, 1, 28, params_per_element=15)
else:
    dec = PixelCNNDecoder(D, (1, 28, 28), channels=32, n_layers=4, params_per_element=15)
vae = VAE(enc, dec, likelihood=lik, latent_dim=D)
opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
t0 = time.time()
g = torch.Generator().manual_seed(0)
for step in range(steps):
    idx = torch.randint(0, xtr.shape[0], (64,), generator=g)
    loss = vae.training_loss(xtr[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 200 == 0:
        print(step, round(loss.item() / (784 * math.log(2)), 4), round(time.time() - t0), flush=True)
vae.eval()
tot_new = tot_old = tot_kl = 0.0
n_int = n_diff = n_mid = 0
ls_sel = []
diffs = []
with torch.no_grad():
    for i in range(0, xte.shape[0], 100):
        x = xte[i : i + 100]
        q = vae.encode(x)
        z = q.rsample((1,))
        params = vae.decode(z, x)[0]
        new = lik.elementwise_log_prob(x, params)
        old = pixelcnnpp(x, params)
        kl = (q.log_prob(z) - vae.prior_distribution().log_prob(z)).sum()
        tot_new += new.sum().item()
        tot_old += old.sum().item()
        tot_kl += kl.item()
        lvl = torch.round(x * 255)
        interior = (lvl > 0) & (lvl < 255)
        n_int += int(interior.sum())
        d = (new - old)[interior]
        diffs.append(d)
        n_mid += int((d.abs() > 0).sum())
        logits, means, log_scales = params.chunk(3, 1)
        k = logits.argmax(1, keepdim=True)
        ls_sel.append(torch.gather(log_scales.clamp(min=-7), 1, k).squeeze(1)[interior])
n = xte.shape[0] * 784
c = n * math.log(2)
d = torch.cat(diffs)
ls = torch.cat(ls_sel)
print(f"model={kind} steps={steps} test images={xte.shape[0]}")
print(
    f"ELBO bits/dim exact={(-tot_new + tot_kl) / c:.5f} pixelcnn++={(-tot_old + tot_kl) / c:.5f} "
    f"difference={(tot_new - tot_old) / c:.3e} (exact minus PixelCNN++ in log p, bits/dim over all pixels)"
)
print(
    f"interior pixels {n_int / n:.3f} of all; per interior pixel: mean diff {d.mean():.5f} nats, max {d.max():.4f}, "
    f"min {d.min():.5f}; share with |diff|>1e-3: {(d.abs() > 1e-3).float().mean():.4f}"
)
print(
    f"pixels whose value changed: {n_mid} of {n}; sum of changes {d.sum():.4f} nats, of |changes| {d.abs().sum():.4f}"
)
print(
    "log-scale of the heaviest component at interior pixels: quantiles 5/25/50/75/95 %",
    [round(v, 2) for v in torch.quantile(ls, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])).tolist()],
)
