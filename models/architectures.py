"""Network architectures, looked up by name.

`tutorial_cnn` is the CIFAR-10 tutorial's network exactly, kept under the same attribute name
(`model`) so a `state_dict` saved by the tutorial's own code loads with `strict=True`.
`vgg16` is torchvision's VGG16 with its last classifier layer replaced for N classes: the
tutorial's "adapt an existing network" lesson. `resnet9` is the strong one: a residual network
for 32×32 inputs with BatchNorm, the layout of the fast CIFAR-10 training records (the DAWNBench
ResNet-9), which `fold_batchnorm` turns into plain convolutions for serving. `whitened_vgg`
is the fastest to train per accuracy point: a VGG-style network behind a frozen patch-whitening
convolution, the layout of the airbench CIFAR-10 speed records (Jordan, arXiv 2404.00498).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class TutorialCNN(nn.Module):
    """The tutorial's CIFAR-10 network; shapes for one 3×32×32 image:

    Conv2d(3, 32, 5, padding=2)   3×32×32 → 32×32×32   (padding 2 keeps 32: (32 + 2·2 − 5)/1 + 1)
    MaxPool2d(2)                 32×32×32 → 32×16×16
    Conv2d(32, 32, 5, padding=2) 32×16×16 → 32×16×16
    MaxPool2d(2)                 32×16×16 → 32×8×8
    Conv2d(32, 64, 5, padding=2) 32×8×8   → 64×8×8
    MaxPool2d(2)                 64×8×8   → 64×4×4
    Flatten                      64×4×4   → 1024
    Linear(1024, 64)             1024     → 64
    Linear(64, N)                64       → N

    There is no activation function: max-pooling is the only non-linearity, as in the tutorial.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(3, 32, 5, 1, 2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, 1, 2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, 1, 2),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1024, 64),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    """3×3 conv (no bias: BatchNorm adds one), optional 2×2 max-pool, BatchNorm, GELU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))  # pooling before BN: 4× fewer values to normalise
    layers += [nn.BatchNorm2d(c_out), nn.GELU()]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + two conv-BN-GELU layers of x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """Residual CNN for 32×32 images; shapes for one 3×32×32 image at width w:

    prep     conv-BN-GELU            3×32×32 →  w×32×32
    layer1   conv-pool-BN-GELU       w×32×32 → 2w×16×16, + Residual(2w)
    layer2   conv-pool-BN-GELU      2w×16×16 → 4w×8×8
    layer3   conv-pool-BN-GELU       4w×8×8  → 8w×4×4,  + Residual(8w)
    head     global max-pool, Linear(8w, N) scaled by 1/8 (keeps the first logits small)

    8 convolutions and a linear layer; w=64 is the DAWNBench ResNet-9 (6.6M parameters).
    """

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w),
            _conv_bn(w, 2 * w, pool=True), Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True),
            _conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, num_classes, bias=False)
        self.logit_scale = 0.125

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.logit_scale


class WhitenedVGG(nn.Module):
    """VGG-style CNN behind a patch-whitening stem; shapes for one 3×32×32 image:

    whiten   Conv2d(3, 24, 2), GELU       3×32×32 → 24×31×31  (frozen: set from the data)
    block1   conv-pool-BN-GELU, conv-BN-GELU     → w1×15×15
    block2   the same                            → w2×7×7
    block3   the same                            → w3×3×3
    head     global max-pool, Linear(w3, N) / 9 (no bias)

    The stem's 24 filters are the 12 eigenvectors of the 2×2 patch covariance and their
    negatives (`training.whitening` fits them); GELU then keeps both signs. BatchNorm has a fixed
    scale of 1 and a learned bias, with running statistics that follow the last few batches
    (momentum 0.4). Each 3×3 conv starts as the identity on its first input channels (Dirac).
    Widths (64, 256, 256) are airbench94's 2.0M parameters; (128, 384, 384) airbench95's 4.6M.
    `residual` gives each block a third conv and a skip over its last two (airbench96's layout).
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (128, 384, 384),
                 logit_scale: float = 1 / 9, residual: bool = False) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)
        self.whiten.weight.requires_grad_(False)
        blocks: list[nn.Module] = [nn.GELU()]
        c_in = 24
        for c_out in widths:
            head = [_dirac_conv(c_in, c_out), nn.MaxPool2d(2), _fixed_scale_bn(c_out), nn.GELU()]
            tail = [SkipPair(c_out)] if residual else [
                _dirac_conv(c_out, c_out), _fixed_scale_bn(c_out), nn.GELU()]
            blocks.append(nn.Sequential(*head, *tail))
            c_in = c_out
        self.features = nn.Sequential(*blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.whiten(x))) * self.logit_scale


class SkipPair(nn.Module):
    """GELU(x + BN(conv(GELU(BN(conv(x)))))): two convs with a skip around them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _dirac_conv(channels, channels), _fixed_scale_bn(channels), nn.GELU(),
            _dirac_conv(channels, channels), _fixed_scale_bn(channels),
        )
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x + self.body(x))


def _dirac_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """3×3 conv, no bias, whose first c_in filters pass their input channel through unchanged
    (the rest keep PyTorch's default init): a deep stack starts close to the identity."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(c_in, c_out)])
    return conv


def _fixed_scale_bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm whose scale stays 1 (only the bias learns); momentum 0.4 and eps 1e-12 as in
    airbench. A positive scale also lets `fold_batchnorm` fold it through a max-pool."""
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a conv (or a conv and a max-pool,
    which commutes with a positive per-channel scale) into that conv, in place.

    Serving then runs one op per layer instead of two. Only exact when BN's scale
    gamma/sqrt(var+eps) is positive where a max-pool sits between them; otherwise left as is.
    """
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module)
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.BatchNorm2d) or layer.training or i == 0:
                continue
            j = i - 1
            through_pool = isinstance(layers[j], nn.MaxPool2d)
            if through_pool:
                j -= 1
            conv = layers[j] if j >= 0 else None
            if not isinstance(conv, nn.Conv2d) or layer.running_var is None:
                continue
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            if through_pool and not bool((scale > 0).all()):
                continue
            fold_norm(conv, layer)
            module[i] = nn.Identity()
    return model


@torch.no_grad()
def fold_norm(layer: nn.Conv2d | nn.Linear, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold the eval-mode `norm` that follows `layer` into its weight and bias, in place."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(norm.running_mean)
    new_bias = (bias - norm.running_mean) * scale + norm.bias
    layer.weight.mul_(scale.view((-1,) + (1,) * (layer.weight.ndim - 1)))
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


def _build_tutorial_cnn(num_classes: int) -> nn.Module:
    return TutorialCNN(num_classes)


def _build_vgg16(num_classes: int) -> nn.Module:
    from torchvision.models import vgg16

    model = vgg16(weights=None)
    last = model.classifier[6]
    model.classifier[6] = nn.Linear(last.in_features, num_classes)
    return model


def _build_resnet9(num_classes: int) -> nn.Module:
    return ResNet9(num_classes)


def _build_whitened_vgg(num_classes: int) -> nn.Module:
    return WhitenedVGG(num_classes)


def _build_whitened_vgg_small(num_classes: int) -> nn.Module:
    return WhitenedVGG(num_classes, widths=(64, 256, 256))


def _build_whitened_resvgg(num_classes: int) -> nn.Module:
    return WhitenedVGG(num_classes, widths=(128, 512, 512), residual=True)


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[int], nn.Module]
    default_input_size: int
    # The tutorial CNN's Linear(1024, 64) only fits 32×32 inputs; VGG16 pools adaptively.
    fixed_input_size: bool
    description: str


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "tutorial_cnn", _build_tutorial_cnn, 32, True,
            "the CIFAR-10 tutorial's 3-conv network (145,578 parameters)",
        ),
        Architecture(
            "vgg16", _build_vgg16, 32, False,
            "torchvision VGG16 with a new N-class head (134M parameters at 10 classes)",
        ),
        Architecture(
            "resnet9", _build_resnet9, 32, True,
            "residual CNN for 32×32 images with BatchNorm (6.6M parameters)",
        ),
        Architecture(
            "whitened_vgg", _build_whitened_vgg, 32, False,
            "VGG-style CNN behind a frozen patch-whitening conv, airbench's layout (4.6M "
            "parameters)",
        ),
        Architecture(
            "whitened_vgg_small", _build_whitened_vgg_small, 32, False,
            "the whitened VGG at airbench94's widths 64/256/256 (2.0M parameters)",
        ),
        Architecture(
            "whitened_resvgg", _build_whitened_resvgg, 32, False,
            "the whitened VGG with three convs and a skip per block, airbench96's layout "
            "(12.7M parameters; a GPU recipe)",
        ),
    )
}


class UnknownArchitectureError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown architecture {name!r}; choose one of: {', '.join(sorted(ARCHITECTURES))}"
        )


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(name) from None


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised network of the named architecture."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    return get_architecture(arch).build(num_classes)


def load_pretrained_backbone(model: nn.Module, arch: str, path: Path) -> list[str]:
    """Load ImageNet weights from a local file into everything but the replaced head.

    Returns the names of the parameters left at their fresh initialisation (the new head).
    The file is read with `weights_only=True`; it may be a bare state_dict (torchvision's
    published `.pth` files are) or one of our checkpoints.
    """
    if arch != "vgg16":
        raise ValueError(f"--pretrained weights are only available for vgg16, not {arch!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    if len(usable) < len(own) - 2:
        raise ValueError(
            f"{path}: only {len(usable)} of {len(own)} tensors match vgg16; "
            "is this torchvision's vgg16 ImageNet state_dict?"
        )
    model.load_state_dict(usable, strict=False)
    return skipped
