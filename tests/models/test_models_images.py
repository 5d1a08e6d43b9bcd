"""Decoding untrusted bytes: accepted formats, limits before decoding, clear errors."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from models.images import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    decode_image,
    header_pixels,
)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims the size, followed by a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def decode(data: bytes, max_pixels: int = 10_000_000) -> Image.Image:
    return decode_image(data, max_pixels=max_pixels, target_size=32)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_each_accepted_format_decodes(fmt: str) -> None:
    img = decode(encode(Image.new("RGB", (40, 30), (250, 10, 10)), fmt))
    assert img.size == (40, 30)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", EmptyImageError, "empty"),
        (b"hello world, not an image", UnsupportedImageError, "accepted formats are PNG"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", UnsupportedImageError,
         "not an image"),
        (b"%PDF-1.4\n1 0 obj\n", UnsupportedImageError, "not an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', UnsupportedImageError, "not an image"),
    ],
    ids=["empty", "text", "eps", "pdf", "svg"],
)
def test_bytes_that_are_not_an_accepted_image_are_refused(data, error, message) -> None:
    with pytest.raises(error, match=message):
        decode(data)


def test_a_truncated_png_is_corrupt() -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    with pytest.raises(CorruptImageError, match="PNG image is truncated or corrupt"):
        decode(data[: len(data) // 2])


def test_a_damaged_compressed_tiff_is_corrupt_and_libtiff_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # libtiff's own handlers would write "ZIPDecode: Decoding error …" to fd 2 for this file,
    # outside the service's JSON logs; the error must reach the caller as an exception only.
    data = bytearray(encode(Image.new("RGB", (64, 64), (10, 200, 30)), "TIFF",
                            compression="tiff_adobe_deflate"))
    data[10:40] = bytes(b ^ 0x55 for b in data[10:40])
    with pytest.raises(CorruptImageError, match="TIFF image is truncated or corrupt"):
        decode(bytes(data))
    assert capfd.readouterr().err == ""


def test_a_header_claiming_65000_squared_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match="more pixels than the limit of 10,000,000"):
        decode(png_claiming(65000, 65000))


def test_a_header_over_the_limit_is_refused_without_decoding_its_pixels() -> None:
    # 5000×4000 of pixel data would take 60 MB; only 64 bytes follow the header.
    with pytest.raises(ImageTooLargeError, match="5000×4000 = 20,000,000 pixels"):
        decode(png_claiming(5000, 4000))


def test_the_pixel_limit_is_the_callers() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    assert decode(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageTooLargeError, match="the limit is 9,999"):
        decode(data, max_pixels=9_999)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = decode(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_the_first_frame_of_an_animated_gif_is_used() -> None:
    frames = [Image.new("P", (8, 8), i) for i in (1, 2, 3)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode(buf.getvalue()).convert("RGB")
    assert out.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
def test_a_large_jpeg_is_decoded_at_reduced_size(fmt: str) -> None:
    big = Image.new("RGB", (4000, 3000), (0, 128, 0))
    params = {"save_all": True, "append_images": [big]} if fmt == "MPO" else {}
    data = encode(big, fmt, **params)
    assert Image.open(io.BytesIO(data)).format == fmt
    out = decode(data, max_pixels=20_000_000)
    # DCT scaling gives the smallest 1/2, 1/4 or 1/8 scale still ≥ 256 px (8 × 32).
    assert out.size == (500, 375)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_header_pixels_reads_the_size_of_every_accepted_format(fmt: str) -> None:
    data = encode(Image.new("RGB", (37, 11), (1, 2, 3)), fmt)
    assert header_pixels(data) == 37 * 11


def test_header_pixels_takes_a_pngs_size_from_ihdr_without_decoding() -> None:
    assert header_pixels(png_claiming(40_000, 30_000)) == 1_200_000_000  # a bomb, undecoded


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0",
                                  b"%PDF-1.4\n"], ids=["empty", "text", "torn-ihdr", "pdf"])
def test_header_pixels_is_none_for_what_decode_image_refuses(data: bytes) -> None:
    assert header_pixels(data) is None
