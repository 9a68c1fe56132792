"""models/m2.py: M2 is a conditional VAE on one-hot labels with a classifier q(y|x); a checkpoint rebuilds it alone."""

from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli, Independent, Normal

from lightning_vae import VAE
from lightning_vae.building import build, describe
from lightning_vae.models import M2Model
from lightning_vae.nets import ConditionalMLPDecoder, ConditionalMLPEncoder, MLPClassifier

SHAPE = (1, 4, 4)


def m2() -> M2Model:
    return M2Model(
        ConditionalMLPEncoder(SHAPE, 3, 2, (8,)),
        ConditionalMLPDecoder(2, 3, SHAPE, (8,)),
        MLPClassifier(SHAPE, 3, (8,)),
        n_classes=3,
    )


def test_given_the_label_m2_is_the_conditional_joint_and_its_classifier_is_q_y_given_x() -> None:
    model = m2()
    x, y, z = torch.bernoulli(torch.rand(4, *SHAPE)), torch.tensor([0, 2, 1, 2]), torch.randn(3, 4, 2)
    logits = torch.stack([model.decoder(z_s, torch.eye(3)[y]) for z_s in z])
    expected = Independent(Bernoulli(logits=logits), 3).log_prob(x) + Independent(
        Normal(torch.zeros(2), torch.ones(2)), 1
    ).log_prob(z)
    torch.testing.assert_close(model.log_joint(x, z, context=y), expected)
    torch.testing.assert_close(model.classify(x), model.classifier(x))
    assert model.log_prior_y == -math.log(3)


def test_a_checkpoint_record_rebuilds_the_model_alone() -> None:
    model = m2()
    record = describe(model)
    assert record is not None and record["class_path"] == "lightning_vae.models.m2.M2Model"
    assert set(record["init_args"]) == {
        "encoder", "decoder", "classifier", "n_classes", "likelihood", "latent_dim", "data_shape"
    }  # fmt: skip
    rebuilt = build(record, "network")  # a latent-variable model fills the network slot
    rebuilt.load_state_dict(model.state_dict())
    x, y = torch.rand(2, *SHAPE), torch.tensor([1, 0])
    torch.testing.assert_close(rebuilt.encode(x, context=y).mean, model.encode(x, context=y).mean)
    assert isinstance(VAE(model=rebuilt).model, M2Model)
