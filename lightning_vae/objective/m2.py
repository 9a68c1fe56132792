"""The semi-supervised objective of M2 (Kingma, Rezende, Mohamed & Welling 2014), as an objective plug-in.

A batch holds labelled and unlabelled examples side by side: the context is the labels, ``-1`` marking an example
without one (the convention of scikit-learn's semi-supervised estimators), so any ``(x, y)`` loader can feed it
(:class:`~lightning_vae.data.SemiSupervisedMNISTDataModule` is one). For a labelled example the bound is

    ``L(x, y) = E_q(z|x,y)[log p(x | y, z)] + log p(y) - KL(q(z | x, y) || p(z))``   (the paper's eq. 6)

and for an unlabelled one the label is summed out under the classifier:

    ``U(x) = sum_y q(y | x) L(x, y) + H(q(y | x))``                                     (eq. 7)

The class sum is one pass: the unlabelled examples are repeated once per class, labelled with every class in turn,
and go through the encoder and decoder together with the labelled examples (a batch of ``B_l + C·B_u`` rows), so
the cost of a step is one pass of that size, not ``C`` passes. The classifier ``q(y | x)`` also learns from the
labels directly: ``alpha · E_labelled[-log q(y | x)]`` (eq. 9).

Scale: every term is in nats per example of the training set. With ``labelled_fraction`` ``p`` (the share of
labelled examples in the whole training set) the loss is ``p · mean_l(-L) + (1 - p) · mean_u(-U) + alpha ·
mean_l(-log q(y|x))``, an unbiased estimate of ``J^alpha / N`` whatever the batch's mix (labelled examples may be
drawn more often than the others); without it the batch's own mix is taken. The paper's weight ``alpha = 0.1 · N``
multiplies ``E_labelled[-log q]`` in the *summed* objective ``J`` over the ``N`` training examples, so per example it
is ``0.1`` (the reference code: ``beta = alpha * n_tot / n_labeled`` per labelled example, ``alpha = 0.1``).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_vae.checks import check_float, check_int
from lightning_vae.data.common import Batch
from lightning_vae.models.base import LatentVariableModel, ModelOutput
from lightning_vae.objective.base import Objective
from lightning_vae.objective.terms import ELBOTerms, kl_terms


class LabelledBound(NamedTuple):
    """``-L(x, y)`` of each row and its parts (nats), for one pass of a conditional model.

    Attributes:
        neg_bound: ``-L(x, y) = recon + beta · kl - log p(y)``, ``(R,)``.
        recon: ``-E_q[log p(x | y, z)]``, ``(R,)``.
        kl: ``KL(q(z | x, y) || p(z))``, ``(R,)``.
        elementwise: The KL of each row and latent dimension ``(R, D)``, or ``None`` when it does not factorise.
    """

    neg_bound: Tensor
    recon: Tensor
    kl: Tensor
    elementwise: Tensor | None


def labelled_bound(model: Any, x: Tensor, out: ModelOutput, beta: float = 1.0) -> LabelledBound:
    """``-L(x, y)`` per row from a pass ``out`` of an M2-type model on ``x`` with labels ``y`` (the paper's eq. 6).

    The reconstruction is averaged over the pass's samples; the KL is in closed form where both are diagonal
    Gaussians (else Monte Carlo on the samples, averaged); ``log p(y)`` is the model's ``log_prior_y``.
    """
    inference, generative = out
    recon = -model.likelihood.log_prob(x, generative.params).mean(0)
    kl, elementwise = kl_terms(inference.posteriors["z"], generative.priors["z"], inference.z["z"])
    if kl.dim() == 2:
        kl = kl.mean(0)
    return LabelledBound(recon + beta * kl - float(model.log_prior_y), recon, kl, elementwise)


def enumerate_classes(x: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Every example of ``x`` ``(B, ...)`` once per class: ``(C·B, ...)`` and labels ``(C·B,)``, class-major.

    Row ``c·B + i`` is example ``i`` labelled ``c``, so ``values.view(C, B)`` puts the classes first.

    Example::

        >>> x, labels = enumerate_classes(torch.tensor([[1.0], [2.0]]), 3)
        >>> x.flatten().tolist(), labels.tolist()
        ([1.0, 2.0, 1.0, 2.0, 1.0, 2.0], [0, 0, 1, 1, 2, 2])
    """
    repeated = x.unsqueeze(0).expand(n_classes, *x.shape).reshape(n_classes * x.shape[0], *x.shape[1:])
    labels = torch.arange(n_classes, device=x.device).repeat_interleave(x.shape[0])
    return repeated, labels


def unlabelled_bound(neg_bounds: Tensor, logits: Tensor) -> Tensor:
    """``-U(x) = sum_y q(y|x) (-L(x, y)) - H(q(y|x))`` per example from ``-L`` of every class ``(B, C)`` (eq. 7).

    Example::

        >>> neg_u = unlabelled_bound(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 2))  # q = (1/2, 1/2), H = log 2
        >>> round(neg_u.item(), 4)
        1.3069
    """
    log_q = F.log_softmax(logits, dim=-1)
    return (log_q.exp() * (neg_bounds + log_q)).sum(-1)


class M2(Objective, name="m2"):
    """The M2 objective ``J^alpha`` (Kingma et al. 2014, eq. 9), in nats per training example.

    Needs a model with ``classify(x) -> logits``, ``n_classes`` and ``log_prior_y`` (an
    :class:`~lightning_vae.models.M2Model`) and batches whose context holds the labels, ``-1`` for an unlabelled
    example. Reports ``classification`` (the mean ``-log q(y|x)`` of the labelled examples) and ``accuracy`` (of
    ``argmax q(y|x)`` on them; 0 for a batch without labels), logged as ``train/...``, ``val/...`` and ``test/...``.

    Args:
        alpha: Weight of the classification term per training example (the paper's ``alpha = 0.1 · N`` for the
            summed objective over ``N`` examples is ``0.1`` here; see the module docstring).
        labelled_fraction: The share of labelled examples in the training set, in (0, 1]; ``None`` takes each
            batch's own share.
        beta: Weight of the KL term in both bounds (1 is the paper's bound; annealing callbacks may set it).
        n_samples: Samples of ``z`` per example and class.

    Raises:
        TypeError: For a value of the wrong type.
        ValueError: For a negative ``alpha`` or ``beta``, a fraction outside (0, 1], ``n_samples`` below 1.

    Example::

        >>> M2(alpha=0.1, labelled_fraction=100 / 50000).weights
        ('alpha', 'beta')
    """

    weights: ClassVar[tuple[str, ...]] = ("alpha", "beta")

    def __init__(
        self, alpha: float = 0.1, labelled_fraction: float | None = None, beta: float = 1.0, n_samples: int = 1
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.alpha = check_float("alpha", alpha, low=0.0)
        self.beta = check_float("beta", beta, low=0.0)
        self.labelled_fraction = (
            None
            if labelled_fraction is None
            else check_float("labelled_fraction", labelled_fraction, low=0.0, high=1.0, strict_low=True)
        )
        self.n_samples = check_int("n_samples", n_samples, low=1)

    def check_model(self, model: LatentVariableModel) -> None:
        missing = [name for name in ("classify", "n_classes", "log_prior_y") if getattr(model, name, None) is None]
        if missing or not getattr(model, "conditional", False):
            raise ValueError(
                f"Expected a conditional model with a classifier (classify, n_classes, log_prior_y: an M2Model) for "
                f"the M2 objective, got {type(model).__name__} without {missing or ['conditional = True']}"
            )

    def training_terms(self, model: LatentVariableModel, batch: Batch, report: bool, check: bool) -> ELBOTerms:
        """The labelled examples and every class of the unlabelled ones in one pass of the model."""
        x, labels = batch.x, self._labels(batch)
        known = labels >= 0
        labelled, unlabelled = known.nonzero().squeeze(1), (~known).nonzero().squeeze(1)
        m2: Any = model
        x_u, classes = enumerate_classes(x[unlabelled], int(m2.n_classes))
        rows = torch.cat([x[labelled], x_u])
        out = model(rows, self.n_samples, context=torch.cat([labels[labelled], classes]))
        if check:
            model.likelihood.check_params(rows, out.generative.params, sample_dims=1)
        return self._terms(m2, x, labels, labelled, unlabelled, labelled_bound(m2, rows, out, self.beta), report)

    def forward(self, model: LatentVariableModel, batch: Batch, out: ModelOutput, report: bool) -> ELBOTerms:
        """The terms of a batch; ``out`` (the pass on the batch's labels) serves when every example has a label."""
        labels = self._labels(batch)
        if bool((labels < 0).any()):  # evaluation only: the training step goes through training_terms
            return self.training_terms(model, batch, report, check=False)
        index = torch.arange(labels.shape[0], device=labels.device)
        bound = labelled_bound(model, batch.x, out, self.beta)
        return self._terms(model, batch.x, labels, index, index[:0], bound, report)

    def _labels(self, batch: Batch) -> Tensor:
        if batch.context is None:
            raise ValueError("The M2 objective needs the labels as the batch's context (-1 for an unlabelled example)")
        labels = batch.context
        return labels.reshape(-1) if labels.dim() == 2 and labels.shape[1] == 1 else labels

    def _terms(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        labelled: Tensor,
        unlabelled: Tensor,
        bound: LabelledBound,
        report: bool,
    ) -> ELBOTerms:
        n_l, n_u = labelled.shape[0], unlabelled.shape[0]
        n_classes = int(model.n_classes)
        logits = model.classify(x)
        logits_l, logits_u = logits[labelled], logits[unlabelled]
        q_u = F.softmax(logits_u, dim=-1)  # (B_u, C)

        def per_class(values: Tensor) -> Tensor:  # the unlabelled rows' values, (B_u, C)
            return values[n_l:].view(n_classes, n_u).T

        neg_l = bound.neg_bound[:n_l]
        neg_u = unlabelled_bound(per_class(bound.neg_bound), logits_u)
        ce = F.cross_entropy(logits_l, labels[labelled].long(), reduction="none")
        p = self.labelled_fraction if self.labelled_fraction is not None else n_l / max(n_l + n_u, 1)
        zero = x.new_zeros(())
        loss = (
            (p * neg_l.mean() if n_l else zero)
            + ((1.0 - p) * neg_u.mean() if n_u else zero)
            + (self.alpha * ce.mean() if n_l else zero)
        )
        # What the monitors read: each example's reconstruction and KL, the unlabelled ones' averaged under q(y|x).
        recon = torch.cat([bound.recon[:n_l], (q_u * per_class(bound.recon)).sum(-1)])
        kl = torch.cat([bound.kl[:n_l], (q_u * per_class(bound.kl)).sum(-1)])
        classification = ce.mean() if n_l else zero
        accuracy = (logits_l.argmax(-1) == labels[labelled]).float().mean() if n_l else zero
        extra = {"classification": classification.detach(), "accuracy": accuracy.detach()}
        if not report:
            return ELBOTerms(loss, None, recon.mean(), kl.mean(), None, kl.mean(), None, None, extra=extra)
        bounds = torch.cat([neg_l, neg_u]).detach()
        per_dim = None
        if bound.elementwise is not None and bound.elementwise.dim() == 2:
            elem = bound.elementwise.detach()
            rows_u = elem[n_l:].view(n_classes, n_u, elem.shape[-1])
            per_dim = torch.cat([elem[:n_l], torch.einsum("uc,cud->ud", q_u.detach(), rows_u)]).mean(0)
        return ELBOTerms(
            loss=loss,
            elbo=-bounds.mean(),
            recon=recon.mean(),
            kl=kl.mean(),
            kl_per_dim=per_dim,
            kl_penalty=kl.mean(),
            iwae=None,
            log_weights=None,
            kl_groups={"z": kl.mean().detach()},
            kl_per_dim_groups={"z": per_dim},
            extra=extra,
        )


__all__ = ["M2", "LabelledBound", "enumerate_classes", "labelled_bound", "unlabelled_bound"]
