"""Damaged files of every accepted format through the decode path the service runs
(decode_image, then image_to_uint8): each either decodes to a (3, 32, 32) uint8 tensor or
raises an ImageError, which the service answers with a 4xx. Any other exception would be a 500.

Hypothesis picks a small valid file and one to four damages (bit flips, interesting integers
written over length and size fields, insertions, deletions, truncation); `derandomize` makes
every run try the same cases, and a failure shrinks to the fewest damages that still fail.
bench/soak.py's fuzz-decode scenario runs many more (and atheris, coverage-guided).
"""

from __future__ import annotations

import functools
import io
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from models.images import ImageError, decode_image
from models.preprocess import image_to_uint8

SIZE = 32


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


@functools.cache
def seeds() -> dict[str, bytes]:
    """Small valid files: each format, in the modes and encodings with their own code paths."""
    rgb = Image.linear_gradient("L").resize((24, 16)).convert("RGB")
    rgb.putpixel((3, 3), (200, 10, 60))
    grey = rgb.convert("L")
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    return {
        "png-rgb": encode(rgb, "PNG"),
        "png-rgba": encode(rgb.convert("RGBA"), "PNG"),
        "png-palette": encode(rgb.convert("P"), "PNG", transparency=0),
        "png-16bit": encode(grey.convert("I;16"), "PNG"),
        "png-1bit": encode(rgb.convert("1"), "PNG"),
        "jpeg": encode(rgb, "JPEG"),
        "jpeg-progressive": encode(rgb, "JPEG", progressive=True),
        "jpeg-cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "gif-animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp-lossy": encode(rgb, "WEBP"),
        "webp-lossless": encode(rgb.convert("RGBA"), "WEBP", lossless=True),
        "bmp": encode(rgb, "BMP"),
        "bmp-palette": encode(rgb.convert("P"), "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "tiff-lzw": encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-16bit": encode(grey.convert("I;16"), "TIFF"),
        "tiff-float": encode(grey.convert("F"), "TIFF"),
        "tiff-cmyk": encode(rgb.convert("CMYK"), "TIFF"),
    }


INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]

damage = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("int"), st.floats(0, 1), st.sampled_from(INTERESTING)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
)


def damaged(data: bytes, damages: list[tuple[str, float, object]]) -> bytes:
    out = bytearray(data)
    for kind, where, arg in damages:
        i = min(int(where * len(out)), max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[i] ^= 1 << int(arg)  # type: ignore[call-overload]
        elif kind == "int":
            out[i:i + 4] = int(arg).to_bytes(4, "big")  # type: ignore[call-overload]
        elif kind == "insert":
            out[i:i] = arg  # type: ignore[assignment]
        elif kind == "delete":
            del out[i:i + int(arg)]  # type: ignore[call-overload]
        elif kind == "truncate":
            del out[i:]
    return bytes(out)


def decode_as_the_service_does(data: bytes) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd tags; pytest would raise
        img = decode_image(data, max_pixels=10_000_000, target_size=SIZE)
        return image_to_uint8(img, SIZE)


@pytest.mark.parametrize("name", sorted(seeds()))
def test_every_seed_decodes(name: str) -> None:
    assert decode_as_the_service_does(seeds()[name]).shape == (3, SIZE, SIZE)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(seeds())), damages=st.lists(damage, min_size=1, max_size=4))
def test_a_damaged_file_decodes_or_raises_an_image_error(
    name: str, damages: list[tuple[str, float, object]]
) -> None:
    data = damaged(seeds()[name], damages)
    try:
        tensor = decode_as_the_service_does(data)
    except ImageError:
        return
    assert tensor.shape == (3, SIZE, SIZE) and tensor.dtype == torch.uint8
