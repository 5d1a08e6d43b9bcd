"""The forward pass every side runs at inference: optional test-time augmentation.

`flip` averages the logits of each image and its left-right mirror: the network was trained
on random flips, so both views are in-distribution and their mean errs less. The checkpoint
records the mode (`meta.tta`); evaluate, predict, temperature fitting and the service all go
through `tta_logits`, so the probabilities they give are the same ones calibrated.
"""

from __future__ import annotations

import torch
from torch import nn

TTA_MODES = ("off", "flip")


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of: "
                         f"{', '.join(TTA_MODES)}")
    return mode


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str = "off") -> torch.Tensor:
    """Logits of a normalised (N, C, H, W) batch; with `flip`, the mean over both views,
    run as one batch of 2N so the network sees one larger call, not two."""
    if check_tta(tta) == "off":
        return model(x)
    both = model(torch.cat([x, x.flip(3)]))
    n = x.shape[0]
    return (both[:n] + both[n:]) / 2
