"""The whitened VGG: identity (Dirac) init, a frozen stem, foldable BatchNorm, multi-crop TTA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from batchnorm import assert_folding_keeps_the_logits, randomize_batchnorm
from torch import nn

from models.architectures import WhitenedVGG, build_model
from models.inference import tta_logits, tta_views


def test_a_fresh_conv_passes_its_input_through_on_the_identity_channels() -> None:
    torch.manual_seed(0)
    model = WhitenedVGG(10, widths=(32, 48, 48))
    conv2 = model.features[1][4]  # block1's second conv: 32 → 32, all of them identity
    x = torch.randn(2, 32, 9, 9)
    torch.testing.assert_close(conv2(x), x)
    conv1 = model.features[2][0]  # block2's first conv: 32 → 48, the first 32 identity
    y = conv1(x)
    torch.testing.assert_close(y[:, :32], x)
    assert not torch.allclose(y[:, 32:], torch.zeros_like(y[:, 32:]))  # the rest are random


def test_the_stem_and_the_batchnorm_scales_are_frozen_and_only_biases_learn() -> None:
    model = WhitenedVGG(10)
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6
    assert all(not bn.weight.requires_grad and bn.bias.requires_grad for bn in norms)


@pytest.mark.parametrize("num_classes", [2, 7, 100])
def test_any_number_of_classes_and_larger_images(num_classes: int) -> None:
    model = build_model("whitened_vgg", num_classes).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, num_classes)


def test_folded_and_unfolded_logits_agree() -> None:
    torch.manual_seed(1)
    model = randomize_batchnorm(WhitenedVGG(10, widths=(16, 32, 32)), scales=False)
    assert_folding_keeps_the_logits(model)


def _views_by_hand(x: torch.Tensor) -> list[torch.Tensor]:
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]
    return [x, x.flip(3), up_left, up_left.flip(3), down_right, down_right.flip(3)]


def test_multicrop_tta_is_the_weighted_mean_of_six_views() -> None:
    torch.manual_seed(2)
    model = WhitenedVGG(5, widths=(8, 16, 16)).eval()
    x = torch.randn(3, 3, 32, 32)
    views, weights = tta_views(x, "multicrop")
    assert len(views) == 6 and sum(weights) == pytest.approx(1.0)
    for got, want in zip(views, _views_by_hand(x), strict=True):
        assert torch.equal(got, want)
    with torch.no_grad():
        by_hand = sum(w * model(v) for w, v in zip(weights, _views_by_hand(x), strict=True))
        torch.testing.assert_close(tta_logits(model, x, "multicrop"), by_hand)
    # The shifted views really are shifted: (i, j) of the up-left view is (i-1, j-1) of x.
    assert torch.equal(views[2][:, :, 1:, 1:], x[:, :, :-1, :-1])
    assert torch.equal(views[4][:, :, :-1, :-1], x[:, :, 1:, 1:])


def test_multicrop_keeps_channels_last_for_the_network() -> None:
    seen = []

    def network(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.is_contiguous(memory_format=torch.channels_last))
        return batch.mean((1, 2, 3)).unsqueeze(1)

    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    tta_logits(network, x, "multicrop")
    assert seen == [True]


def test_the_residual_variant_skips_over_two_convs_and_folds() -> None:
    torch.manual_seed(4)
    model = build_model("whitened_resvgg", 10)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 10  # stem + 3 × 3
    assert_folding_keeps_the_logits(randomize_batchnorm(model, scales=False))


def test_the_small_variant_has_airbench94s_widths_and_folds() -> None:
    torch.manual_seed(5)
    model = build_model("whitened_vgg_small", 10)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [24, 64, 64, 256, 256, 256, 256]
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert_folding_keeps_the_logits(randomize_batchnorm(model, scales=False))
