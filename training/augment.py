"""Augmentation on whole batches of uint8 tensors: random crop with padding, horizontal flip.

Two `gather`s per batch instead of a PIL round trip per image; the flip is folded into the
column index, so it costs nothing extra.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(
    batch: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """(N, C, H, W) → same shape: each image shifted by up to `padding` px (zero fill)
    and mirrored left-right with probability 1/2. Randomness comes only from `generator`."""
    n, c, h, w = batch.shape
    # Random numbers come from the (CPU) generator, so a run repeats exactly on any device.
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    cols = torch.arange(w).expand(n, w)
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).view(n, 1)
        cols = torch.where(mirror, w - 1 - cols, cols)
    rows = (dy + torch.arange(h)).to(batch.device)
    cols = (dx + cols).to(batch.device)
    padded = F.pad(batch, (padding, padding, padding, padding)) if padding else batch
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * padding))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))
