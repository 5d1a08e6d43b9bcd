"""Batch augmentation: crops stay inside the padding, flips mirror, the generator decides."""

from __future__ import annotations

import torch

from training.augment import random_crop_flip


def batch(n: int = 64) -> torch.Tensor:
    return torch.randint(1, 256, (n, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding shows


def test_no_padding_and_no_flip_is_the_identity() -> None:
    x = batch()
    assert torch.equal(random_crop_flip(x, 0, False, torch.Generator().manual_seed(0)), x)


def test_each_image_is_a_shifted_window_of_its_zero_padded_self() -> None:
    x, pad = batch(), 2
    out = random_crop_flip(x, pad, False, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    shifts = set()
    for i in range(len(x)):
        windows = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(padded[i, :, dy:dy + 8, dx:dx + 8], out[i])]
        assert windows, f"image {i} is not a crop of its padded self"
        shifts.add(windows[0])
    assert len(shifts) > 5  # the shifts really vary


def test_flip_mirrors_about_half_of_the_images() -> None:
    x = batch(400)
    out = random_crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    mirrored = sum(torch.equal(out[i], x[i].flip(2)) for i in range(len(x)))
    kept = sum(torch.equal(out[i], x[i]) for i in range(len(x)))
    assert mirrored + kept == len(x)
    assert 150 < mirrored < 250


def test_the_same_generator_seed_gives_the_same_batch() -> None:
    x = batch()
    a = random_crop_flip(x, 4, True, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, 4, True, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, 4, True, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
