"""Preprocessing: every mode becomes RGB, sizes become the input size, normalisation is exact."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.preprocess import image_to_uint8, normalize, preprocess, to_rgb


def pixels(img: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(px) for px in np.asarray(img).reshape(-1, 3).tolist()]


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_mode_becomes_8_bit_rgb(mode: str) -> None:
    img = Image.new(mode, (5, 4))
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 4)


def test_transparent_pixels_are_shown_over_white() -> None:
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (10, 20, 30, 255))
    assert pixels(to_rgb(img)) == [(255, 255, 255), (10, 20, 30)]


def test_palette_transparency_is_honoured() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0
    assert pixels(to_rgb(img)) == [(255, 255, 255), (200, 100, 50)]


@pytest.mark.parametrize(("mode", "key", "colour"), [("RGB", (0, 0, 0), (10, 20, 30)),
                                                    ("L", 0, (77, 77, 77))])
def test_a_png_colour_key_is_transparent_too(mode, key, colour) -> None:
    img = Image.new(mode, (2, 1), key)
    img.putpixel((1, 0), colour if mode == "RGB" else colour[0])
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=key)
    assert pixels(to_rgb(Image.open(buf))) == [(255, 255, 255), colour]


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert [px[0] for px in pixels(to_rgb(img))] == [0, 128, 255]


def test_float_images_in_0_1_are_scaled_to_0_255() -> None:
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [px[0] for px in pixels(to_rgb(img))] == [0, 128, 255]


def test_image_to_uint8_resizes_any_size_to_the_input_size() -> None:
    img = Image.new("RGB", (456, 336), (200, 100, 50))
    t = image_to_uint8(img, 32)
    assert t.dtype == torch.uint8 and t.shape == (3, 32, 32)
    assert t[:, 0, 0].tolist() == [200, 100, 50]


def test_a_32px_image_passes_through_unchanged() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    t = image_to_uint8(Image.fromarray(arr), 32)
    assert torch.equal(t, torch.from_numpy(arr).permute(2, 0, 1))


def test_normalize_computes_x_over_255_minus_mean_over_std() -> None:
    batch = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalize(batch, mean=[0.0, 0.1, 0.5], std=[1.0, 0.5, 0.25])
    assert out.flatten().tolist() == pytest.approx([0.0, (0.2 - 0.1) / 0.5, (1.0 - 0.5) / 0.25])


def test_preprocess_is_image_to_uint8_then_normalize() -> None:
    img = Image.new("L", (64, 48), 128)
    expected = normalize(image_to_uint8(img, 32), [0.5] * 3, [0.25] * 3)
    assert torch.equal(preprocess(img, 32, [0.5] * 3, [0.25] * 3), expected)
