"""The strong network: residual layout, BatchNorm folding, test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from batchnorm import assert_folding_keeps_the_logits, randomize_batchnorm
from torch import nn

from models.architectures import ResNet9, build_model, fold_batchnorm
from models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from models.inference import tta_logits


def trained_looking_resnet(num_classes: int = 10, width: int = 8) -> ResNet9:
    """A small ResNet-9 whose BatchNorms hold non-trivial statistics and affine weights."""
    torch.manual_seed(0)
    return randomize_batchnorm(ResNet9(num_classes, width=width))


@pytest.mark.parametrize("num_classes", [2, 10, 37])
def test_resnet9_builds_for_any_number_of_classes(num_classes: int) -> None:
    model = build_model("resnet9", num_classes).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, num_classes)
    assert sum(p.numel() for p in model.parameters()) > 6_000_000


def test_resnet9_shapes_halve_three_times_and_double_the_width() -> None:
    model = ResNet9(10, width=8).eval()
    x = torch.zeros(1, 3, 32, 32)
    shapes = []
    for layer in model.features[:-2]:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(8, 32, 32), (16, 16, 16), (16, 16, 16), (32, 8, 8), (64, 4, 4),
                      (64, 4, 4)]


def test_folded_batchnorm_gives_the_same_logits_with_fewer_layers() -> None:
    assert_folding_keeps_the_logits(trained_looking_resnet())


def test_a_negative_batchnorm_scale_behind_a_max_pool_is_left_unfolded() -> None:
    model = trained_looking_resnet()
    pooled_bn = model.features[1][2]  # conv, pool, BN
    pooled_bn.weight.data[0] = -1.0  # max-pool does not commute with a negative scale
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        fold_batchnorm(model)
        after = model(x)
    assert isinstance(model.features[1][2], nn.BatchNorm2d)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_resnet9_round_trips_through_a_checkpoint_folded_or_not(tmp_path: Path) -> None:
    model = build_model("resnet9", 3).eval()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_var.uniform_(0.5, 2.0)
    meta = CheckpointMeta(arch="resnet9", classes=["a", "b", "c"], input_size=32,
                          mean=[0.5] * 3, std=[0.25] * 3, tta="flip")
    save_checkpoint(tmp_path / "r.pt", model, meta)
    plain = load_checkpoint(tmp_path / "r.pt")
    folded = load_checkpoint(tmp_path / "r.pt", fold_bn=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(plain.model(x), expected)
        torch.testing.assert_close(folded.model(x), expected, rtol=1e-4, atol=1e-5)
    assert plain.meta.tta == "flip"


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror() -> None:
    model = trained_looking_resnet(4)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = (model(x) + model(torch.flip(x, dims=[3]))) / 2
        torch.testing.assert_close(tta_logits(model, x, "flip"), expected,
                                   rtol=1e-5, atol=1e-6)
        assert torch.equal(tta_logits(model, x, "off"), model(x))


def test_an_unknown_tta_mode_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="off, flip"):
        tta_logits(nn.Identity(), torch.zeros(1, 3, 2, 2), "five-crop")
    with pytest.raises(ValueError, match="tta must be one of off, flip"):
        CheckpointMeta(arch="resnet9", classes=["a", "b"], input_size=32, mean=[0.0] * 3,
                       std=[1.0] * 3, tta="rotate").validate()


def test_half_precision_weights_halve_the_file_and_load_back_as_float32(tmp_path: Path) -> None:
    meta = CheckpointMeta(arch="resnet9", classes=[str(i) for i in range(10)], input_size=32,
                          mean=[0.5] * 3, std=[0.25] * 3)
    model = build_model("resnet9", 10).eval()
    save_checkpoint(tmp_path / "full.pt", model, meta)
    save_checkpoint(tmp_path / "half.pt", model, meta, weights_dtype=torch.float16)
    full, half = (tmp_path / "full.pt").stat().st_size, (tmp_path / "half.pt").stat().st_size
    assert half < 0.55 * full
    loaded = load_checkpoint(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=2e-2, atol=2e-3)
