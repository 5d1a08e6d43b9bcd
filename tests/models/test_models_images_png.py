"""PNGs decoded by libspng (models/png.py) through decode_image: Pillow's pixels, and only for
intact files. Every colour type, EXIF and ancillary chunks: tests/models/test_models_png.py."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from png_corpus import SIGNATURE, CountingSpng, chunk, make_png

import models.png
from models.images import CorruptImageError, ImageTooLargeError, decode_image
from models.png import SPNG_MAX_PIXELS, inspect_png
from models.preprocess import decode_to_uint8, image_to_uint8


def fast(data: bytes) -> bool:
    """Whether libspng may decode it: inspect_png found nothing to leave to Pillow."""
    return inspect_png(data) is not None


def decode(data: bytes) -> Image.Image:
    return decode_image(data, max_pixels=10_000_000, target_size=32)


def pillows_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("size", [(64, 64), (97, 43), (41, 130)])
def test_a_plain_png_decodes_to_pillows_pixels_with_every_filter(
    channels: int, size: tuple[int, int], spng: CountingSpng,
) -> None:
    rng = np.random.default_rng(channels * 100 + size[0])
    width, height = size
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    kinds = [y % 5 for y in range(height)]
    data = make_png(pixels, kinds, idat_chunks=min(3, height))
    assert fast(data)
    np.testing.assert_array_equal(pillows_pixels(data), pixels)  # the test's encoder is right
    img = decode(data)
    assert spng.calls == 1
    assert img.mode == ("RGB" if channels == 3 else "RGBA")
    np.testing.assert_array_equal(np.asarray(img), pixels)


def test_pillows_own_pngs_take_the_fast_path_with_the_same_pixels(spng: CountingSpng) -> None:
    img = Image.effect_noise((120, 90), 60).convert("RGB")
    for params in ({}, {"optimize": True}, {"compress_level": 1}):
        buf = io.BytesIO()
        img.save(buf, "PNG", **params)
        assert fast(buf.getvalue())
        np.testing.assert_array_equal(np.asarray(decode(buf.getvalue())), np.asarray(img))
    assert spng.calls == 3


RAW_EXIF = b"Raw profile type exif\0"  # ImageMagick's EXIF text chunk, which Pillow applies


def base() -> np.ndarray:
    return np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)


def with_ihdr_byte(at: int, value: int) -> bytes:
    """A plain PNG whose IHDR has byte `at` (of the file) set to `value`, its CRC right."""
    data = make_png(base(), [0] * 4)
    body = data[16:at] + bytes([value]) + data[at + 1:29]
    return data[:8] + chunk(b"IHDR", body) + data[33:]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(make_png(base(), [1] * 4, chunk(b"eXIf", b"MM\0*")), id="broken-eXIf"),
        pytest.param(make_png(base(), [1] * 4, chunk(b"acTL", b"\0\0\0\1\0\0\0\0")), id="APNG"),
        pytest.param(with_ihdr_byte(24, 3), id="3-bit"),
        pytest.param(with_ihdr_byte(25, 1), id="colour-type-1"),
        pytest.param(with_ihdr_byte(26, 1), id="compression-1"),
        pytest.param(with_ihdr_byte(27, 1), id="filter-method-1"),
        pytest.param(with_ihdr_byte(28, 2), id="interlace-2"),
        pytest.param(
            (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:])(make_png(base(), [0] * 4)),
            id="bad-CRC",
        ),
        pytest.param(make_png(base(), [1] * 4, chunk(b"zTXt", RAW_EXIF + b"\0x")),
                     id="zTXt-exif"),
        pytest.param((lambda d: d[:8] + chunk(b"IHDR", d[16:29] + b"\0") + d[33:])(
            make_png(base(), [0] * 4)), id="IHDR-length"),
        pytest.param(make_png(base(), [0] * 4)[:-20], id="torn-chunk"),
        pytest.param(make_png(base(), [0] * 4)[:20], id="torn-header"),
    ],
)
def test_damaged_or_unusual_pngs_are_left_to_pillow(data: bytes) -> None:
    assert not fast(data)


@pytest.mark.parametrize("mode", ["P", "L", "LA", "I;16", "1"])
def test_pillows_pngs_of_other_modes_take_the_fast_path_too(
    mode: str, spng: CountingSpng,
) -> None:
    img = Image.effect_noise((9, 7), 80).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG", **({"transparency": 3} if mode == "P" else {}))
    ours = decode(buf.getvalue())
    assert spng.calls == 1
    theirs = decode_image(buf.getvalue(), max_pixels=10_000_000, target_size=32, libspng=False)
    assert ours.mode == theirs.mode == img.mode
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert ours.info.get("transparency") == theirs.info.get("transparency")


def test_damaged_pixel_data_is_refused_not_decoded_to_garbage() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = bytearray(make_png(pixels, [4] * 64))
    idat = data.index(b"IDAT")
    data[idat + 200] ^= 0xFF  # a damaged byte in transit: the chunk's CRC no longer matches
    assert not fast(bytes(data))
    with pytest.raises(CorruptImageError, match="PNG image is truncated or corrupt"):
        decode(bytes(data))


def test_corrupt_data_with_correct_crcs_is_refused_by_libspng_then_by_pillow(
    spng: CountingSpng,
) -> None:
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    data = (SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"not zlib at all")
            + chunk(b"IEND", b""))
    assert fast(data)
    with pytest.raises(CorruptImageError, match="PNG image is truncated or corrupt"):
        decode(data)
    assert spng.calls == 1


def png_of(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (9, 8, 7)).save(buf, "PNG", compress_level=1)
    assert fast(buf.getvalue())
    return buf.getvalue()


@pytest.mark.parametrize(
    ("side", "by_spng"),
    [(1, True), (int(SPNG_MAX_PIXELS ** 0.5), True), (int(SPNG_MAX_PIXELS ** 0.5) + 1, False)],
    ids=["1x1", "max", "over-max"],
)
def test_only_pngs_within_the_size_range_go_to_libspng(
    side: int, by_spng: bool, spng: CountingSpng,
) -> None:
    assert decode(png_of(side)).getpixel((0, 0)) == (9, 8, 7)
    assert spng.calls == by_spng


def black_png(width: int, height: int, depth: int, colour: int, channels: int) -> bytes:
    row = b"\0" * (1 + width * channels * depth // 8)  # filter type 0, then zero samples
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize(("extra", "by_spng"), [(0, True), (1, False)], ids=["max", "over-max"])
def test_16_bit_pngs_get_fewer_pixels_for_the_same_image_data(
    extra: int, by_spng: bool, spng: CountingSpng,
) -> None:
    side = int((models.png.SPNG_MAX_BYTES // 8) ** 0.5)  # 16-bit RGBA: 8 bytes a pixel
    data = black_png(side + extra, side, 16, 6, 4)
    assert decode(data).getpixel((0, 0)) == (0, 0, 0, 0)
    assert spng.calls == by_spng


def test_without_libspng_pillow_decodes_every_png(spng: CountingSpng) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (80, 70, 3), dtype=np.uint8)
    data = make_png(pixels, [y % 5 for y in range(80)])
    without = decode_image(data, max_pixels=10_000_000, target_size=32, libspng=False)
    assert spng.calls == 0
    np.testing.assert_array_equal(np.asarray(without), np.asarray(decode(data)))
    assert spng.calls == 1


def test_a_png_with_exif_orientation_in_a_text_chunk_is_turned_as_pillow_turns_it(
    spng: CountingSpng,
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    raw = exif.tobytes()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(raw):8d}\n{raw.hex()}\n")
    buf = io.BytesIO()
    Image.new("RGB", (48, 20), (200, 10, 10)).save(buf, "PNG", pnginfo=info)
    assert not fast(buf.getvalue())
    assert decode(buf.getvalue()).size == (20, 48)
    assert spng.calls == 0


@pytest.mark.parametrize("size", [(32, 32), (16, 16), (40, 24)])
@pytest.mark.parametrize("channels", [3, 4])
def test_decode_to_uint8_gives_the_pixels_of_the_pillow_path(
    size: tuple[int, int], channels: int, spng: CountingSpng,
) -> None:
    width, height = size
    pixels = np.random.default_rng(width + channels).integers(
        0, 256, (height, width, channels), dtype=np.uint8)
    data = make_png(pixels, [y % 5 for y in range(height)])
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        expected = image_to_uint8(img, 32)  # Pillow decodes, then the usual preprocessing
    got = decode_to_uint8(data, max_pixels=10_000_000, size=32)
    assert spng.calls == 1
    assert got.shape == (3, 32, 32) and got.dtype == torch.uint8
    assert torch.equal(got, expected)
    assert torch.equal(decode_to_uint8(data, max_pixels=10_000_000, size=32, libspng=False),
                       expected)
    assert spng.calls == 1


def test_decode_to_uint8_leaves_a_png_over_the_pixel_limit_to_decode_images_error() -> None:
    with pytest.raises(ImageTooLargeError, match="the limit is 1,023"):
        decode_to_uint8(png_of(32), max_pixels=1023, size=32)
