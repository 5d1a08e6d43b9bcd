"""Augmentation on whole batches of uint8 tensors: random crop with padding, horizontal flip.

Padding is zeros or a reflection of the border (`reflect`, which airbench's recipe uses: no
black frame for the network to learn). Flips are a coin per image per epoch, or
`alternating_mirror`: a coin per image drawn once, then inverted every other epoch, so each
image is seen both ways in every pair of epochs. `cutout` blanks a random square of each
normalised image (to the mean colour, 0), for long runs where the network would memorise.

Two `gather`s per batch instead of a PIL round trip per image; the flip is folded into the
column index, so it costs nothing extra. The random draw and the pixel work are separate so a
view can be drawn once, stored, and replayed (training.teacher_views).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_crop_flip(
    n: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dy, dx, mirror) for n images: shifts in [0, 2·padding] and a coin per image (all
    False without `flip`). On the CPU, so a run repeats exactly on any device."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    if not flip:
        return dy, dx, torch.zeros(n, dtype=torch.bool)
    return dy, dx, torch.rand(n, generator=generator) < 0.5


def alternating_mirror(
    n: int, epoch: int, generator_seed: int
) -> torch.Tensor:
    """Which of n images to mirror in `epoch`: a coin per image fixed by the seed, inverted in
    odd epochs, so every image is mirrored in exactly every other epoch."""
    coins = torch.rand(n, generator=torch.Generator().manual_seed(generator_seed)) < 0.5
    return coins ^ bool(epoch % 2)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices into a padded axis → indices into the unpadded one, mirrored at the border
    without repeating the edge (F.pad's "reflect"): -1 → 1, size → size - 2."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def crop_flip(
    batch: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, mirror: torch.Tensor,
    *, reflect: bool = False,
) -> torch.Tensor:
    """(N, C, H, W) → same shape: image i padded by `padding` (zeros, or its reflection),
    cropped at (dy[i], dx[i]) and mirrored left-right where mirror[i]."""
    n, c, h, w = batch.shape
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(mirror.view(n, 1).cpu(), w - 1 - cols, cols)
    rows = dy.view(n, 1).cpu() + torch.arange(h)
    cols = dx.view(n, 1).cpu() + cols
    if reflect:  # index the unpadded image directly: no padded copy at all
        rows, cols = _reflect(rows - padding, h), _reflect(cols - padding, w)
        padding = 0
    rows, cols = rows.to(batch.device), cols.to(batch.device)
    padded = F.pad(batch, (padding, padding, padding, padding)) if padding else batch
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * padding))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def random_crop_flip(
    batch: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """(N, C, H, W) → same shape: each image shifted by up to `padding` px (zero fill)
    and mirrored left-right with probability 1/2. Randomness comes only from `generator`."""
    return crop_flip(batch, padding, *draw_crop_flip(len(batch), padding, flip, generator))


def cutout(batch: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """(N, C, H, W) → same shape with a size×size square (inside the image, at a random
    corner per image) set to 0."""
    n, _, h, w = batch.shape
    top = torch.randint(0, h - size + 1, (n,), generator=generator).to(batch.device)
    left = torch.randint(0, w - size + 1, (n,), generator=generator).to(batch.device)
    rows = torch.arange(h, device=batch.device).view(1, h, 1) - top.view(n, 1, 1)
    cols = torch.arange(w, device=batch.device).view(1, 1, w) - left.view(n, 1, 1)
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    return batch.masked_fill(inside.unsqueeze(1), 0)
