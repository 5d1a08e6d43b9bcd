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


def test_alternating_flip_mirrors_each_image_in_exactly_every_other_epoch() -> None:
    from training.augment import alternating_mirror

    epochs = torch.stack([alternating_mirror(200, epoch, generator_seed=3) for epoch in range(6)])
    assert torch.equal(epochs[1:], ~epochs[:-1])  # every image flips state each epoch
    assert torch.equal(epochs[0], epochs[2]) and torch.equal(epochs[0], epochs[4])
    assert 60 < int(epochs[0].sum()) < 140  # a fair coin for the first epoch
    assert not torch.equal(epochs[0], alternating_mirror(200, 0, generator_seed=4))


def test_reflect_padding_crops_what_f_pad_reflect_would() -> None:
    import torch.nn.functional as F

    from training.augment import crop_flip

    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    dy, dx = torch.tensor([0, 1, 2, 3, 4, 2]), torch.tensor([4, 0, 2, 1, 3, 4])
    mirror = torch.tensor([True, False, True, False, True, False])
    out = crop_flip(x, 2, dy, dx, mirror, reflect=True)
    padded = F.pad(x.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for i in range(6):
        want = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], want.flip(-1) if mirror[i] else want), i


def test_cutout_blanks_one_square_of_the_given_size_inside_each_image() -> None:
    from training.augment import cutout

    x = torch.ones(50, 3, 10, 10)
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    blank = out[:, 0] == 0
    assert torch.equal(blank, (out == 0).all(1))  # every channel of the square
    assert (blank.sum((1, 2)) == 16).all()
    rows, cols = blank.any(2), blank.any(1)
    assert (rows.sum(1) == 4).all() and (cols.sum(1) == 4).all()  # one 4×4 square
    assert len({tuple(r.nonzero().flatten().tolist()) for r in rows}) > 3  # at random places
