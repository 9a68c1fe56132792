"""The module protocols (protocols.py): the members each declares (with its bases'), what an object lacks in
declaration order, methods that must be callable, and require's one TypeError naming the user, the protocol, the
class and what is missing; VAE keeps every protocol."""

from __future__ import annotations

import pytest
from support.modules import tiny_vae

from lightning_vae.protocols import (
    Annealable,
    SupportsCapacityGamma,
    SupportsFreeBitsMode,
    SupportsGroupBetas,
    SupportsLogJoint,
    SupportsLogWeights,
    SupportsTrainingLoss,
    SupportsViews,
    missing_members,
    require,
)


class Nothing:
    pass


def test_missing_members_in_declaration_order_with_the_bases_first() -> None:
    assert missing_members(Nothing(), Annealable) == ["beta", "free_bits", "capacity"]
    assert missing_members(Nothing(), SupportsFreeBitsMode) == [
        "beta",
        "free_bits",
        "capacity",
        "free_bits_mode",
        "free_bits_groups",
    ]
    assert missing_members(Nothing(), SupportsCapacityGamma)[-1] == "capacity_gamma"
    assert missing_members(Nothing(), SupportsViews) == ["sample", "reconstruct", "encode", "decode"]
    assert missing_members(Nothing(), SupportsTrainingLoss) == ["encoder", "decoder", "training_loss", "encode"]
    assert missing_members(Nothing(), SupportsGroupBetas) == ["group_betas"]
    assert missing_members(Nothing(), SupportsLogWeights) == ["log_weights"]


def test_an_attribute_that_is_not_callable_does_not_keep_a_method() -> None:
    class Half:
        encode = "not a method"
        capacity = None  # an attribute that is None still exists

        def log_joint(self, x, z):
            return x

    assert missing_members(Half(), SupportsLogJoint) == ["encode"]
    assert missing_members(Half(), Annealable) == ["beta", "free_bits"]


def test_require_names_the_user_the_protocol_the_class_and_what_it_lacks() -> None:
    with pytest.raises(
        TypeError,
        match=r"^ImportanceWeightedNLL needs `encode` and `log_joint` on the module, and Nothing has no `encode` and "
        r"`log_joint`\. ImportanceWeightedNLL works with any LightningModule that has `encode\(x\)`",
    ):
        require(Nothing(), SupportsLogJoint, "ImportanceWeightedNLL")

    class BetaOnly:
        beta = 1.0

    require(BetaOnly(), Annealable, "KLAnnealing", members=("beta",))  # only what the user needs
    with pytest.raises(TypeError, match=r"FreeBits needs `free_bits` on the module, and BetaOnly has no `free_bits`"):
        require(BetaOnly(), Annealable, "FreeBits", members=("free_bits",))
    with pytest.raises(ValueError, match=r"Expected `members` to be members of Annealable \['beta', .*got \['gamma'\]"):
        require(BetaOnly(), Annealable, "X", members=("gamma",))


def test_the_vae_keeps_every_protocol() -> None:
    vae = tiny_vae()
    for protocol in (
        Annealable,
        SupportsFreeBitsMode,
        SupportsCapacityGamma,
        SupportsGroupBetas,
        SupportsLogJoint,
        SupportsLogWeights,
        SupportsViews,
        SupportsTrainingLoss,
    ):
        assert missing_members(vae, protocol) == [], protocol.__name__
        require(vae, protocol, "test")
        assert isinstance(vae, protocol)  # runtime_checkable agrees
