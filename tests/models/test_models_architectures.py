"""Architectures: output shapes, the tutorial's padding arithmetic, tutorial state_dicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.architectures import ARCHITECTURES, TutorialCNN, build_model, get_architecture


class ReadersTutorialNet(nn.Module):
    """The network as a tutorial reader writes it, with the tutorial's attribute name."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(3, 32, 5, 1, 2), nn.MaxPool2d(2), nn.Conv2d(32, 32, 5, 1, 2),
            nn.MaxPool2d(2), nn.Conv2d(32, 64, 5, 1, 2), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(1024, 64), nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("num_classes", [2, 10])
def test_every_architecture_outputs_one_logit_per_class(arch: str, num_classes: int) -> None:
    model = build_model(arch, num_classes).eval()
    size = get_architecture(arch).default_input_size
    with torch.no_grad():
        out = model(torch.zeros(3, 3, size, size))
    assert out.shape == (3, num_classes)


def test_tutorial_cnn_layer_shapes_follow_the_padding_arithmetic() -> None:
    model = TutorialCNN()
    shapes = []
    x = torch.zeros(1, 3, 32, 32)
    for layer in model.model:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [
        (32, 32, 32), (32, 16, 16), (32, 16, 16), (32, 8, 8), (64, 8, 8), (64, 4, 4),
        (1024,), (64,), (10,),
    ]


def test_tutorial_cnn_has_exactly_the_tutorial_layers() -> None:
    layers = [type(m).__name__ for m in TutorialCNN().model]
    assert layers == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d",
                      "Flatten", "Linear", "Linear"]
    assert sum(p.numel() for p in TutorialCNN().parameters()) == 145_578


def test_a_readers_tutorial_state_dict_loads_strictly_and_computes_the_same() -> None:
    torch.manual_seed(0)
    theirs = ReadersTutorialNet().eval()
    ours = TutorialCNN().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_vgg16_keeps_torchvision_layers_and_replaces_only_the_head() -> None:
    model = build_model("vgg16", 7)
    assert model.classifier[6].out_features == 7
    assert model.classifier[6].in_features == 4096
    assert model.features[0].in_channels == 3


def test_unknown_architecture_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet'.*tutorial_cnn, vgg16"):
        build_model("resnet", 10)
