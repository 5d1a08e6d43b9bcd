"""The forward pass every side runs at inference: optional test-time augmentation.

`flip` averages the logits of each image and its left-right mirror: the network was trained
on random flips, so both views are in-distribution and their mean errs less. `multicrop` adds
the image shifted one pixel up-left and one pixel down-right (borders reflected), each also
mirrored: six views, the unshifted pair weighing as much as the four shifted ones together
(airbench's "mirror + translate" TTA). The checkpoint records the mode (`meta.tta`); evaluate,
predict, temperature fitting and the service all go through `tta_logits`, so the
probabilities they give are the same ones calibrated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TTA_MODES = ("off", "flip", "multicrop")


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of: "
                         f"{', '.join(TTA_MODES)}")
    return mode


def tta_views(x: torch.Tensor, tta: str) -> tuple[list[torch.Tensor], list[float]]:
    """The views of a normalised (N, C, H, W) batch that `tta` averages, and their weights."""
    if check_tta(tta) == "off":
        return [x], [1.0]
    if tta == "flip":
        return [x, x.flip(3)], [0.5, 0.5]
    h, w = x.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[:, :, :h, :w], padded[:, :, 2:, 2:]
    views = [x, x.flip(3), up_left, up_left.flip(3), down_right, down_right.flip(3)]
    return views, [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str = "off") -> torch.Tensor:
    """Logits of a normalised (N, C, H, W) batch; with TTA, the weighted mean over its views,
    run as one batch of (views × N) so the network sees one larger call, not several."""
    views, weights = tta_views(x, tta)
    if len(views) == 1:
        return model(x)
    n = x.shape[0]
    out = model(torch.cat(views).contiguous(memory_format=_memory_format(x)))
    return sum(w * out[i * n:(i + 1) * n] for i, w in enumerate(weights))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
