"""models/exif.py: for every EXIF block it reads, the Orientation Pillow finds (and Pillow finds
it without a warning); turns exactly as Image.transpose."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps, TiffImagePlugin
from png_corpus import orientation_exif, tiff

from models import exif


def pillows_orientation(block: bytes) -> int | None:
    """What exif_transpose reads, with Pillow's warnings turned into errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = Image.Exif()
        found.load(block)
        return found.get(exif.ORIENTATION)


def test_the_type_sizes_are_pillows() -> None:
    pillows = {kind: size for kind, (size, _) in
               TiffImagePlugin.ImageFileDirectory_v2._load_dispatch.items()}
    assert pillows == exif._TYPE_SIZES


@pytest.mark.parametrize("order", [b"MM", b"II"])
@pytest.mark.parametrize("value", [0, 1, 6, 8, 9, 0xFFFF])
def test_a_well_formed_orientation_is_read_in_either_byte_order(order: bytes, value: int) -> None:
    block = b"Exif\0\0" + orientation_exif(value, order)
    assert exif.orientation(block) == pillows_orientation(block) == value


def test_an_empty_block_has_no_orientation() -> None:
    assert exif.orientation(b"Exif\0\0") is None
    assert exif.orientation(b"") is None


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    """TIFF-like blocks: either byte order, entries of a few tags, of any type and count, with
    values in or out of the block; half of them damaged: a wrong header or IFD offset, cut
    anywhere, or more "Exif\\0\\0" prefixes than Pillow strips."""
    order = draw(st.sampled_from([b"MM", b"II"]))
    end = ">" if order == b"MM" else "<"
    entries = draw(st.lists(st.tuples(
        st.sampled_from([0x0112, 0x0112, 0x010F, 0x8769, 0x0100]),
        st.one_of(st.just(3), st.integers(0, 18)),  # mostly SHORT, as Orientation should be
        st.one_of(st.just(1), st.sampled_from([0, 2, 3, 40, 0xFFFFFFFF])),
        st.sampled_from([0, 6, 0x0600, 8, 30, 60, 0xFFFF]),
    ), max_size=4))
    raw = [(tag, kind, count, struct.pack(end + "I", value)) for tag, kind, count, value in entries]
    block = bytearray(tiff(raw, order, extra=draw(st.binary(max_size=40))))
    if not draw(st.booleans()):
        return bytes(block)  # intact
    damage = st.integers(0, 2)  # each damage in one damaged example of three
    if draw(damage) == 0:
        block[4:8] = struct.pack(end + "I", draw(st.integers(0, len(block) + 4)))
    if draw(damage) == 0:
        block[2:4] = draw(st.sampled_from([b"\0*", b"*\0", b"\0+", b"+\0"]))
    if draw(damage) == 0:
        block = block[:draw(st.integers(0, len(block)))]
    return draw(st.sampled_from([b"", b"Exif\0\0", b"Exif\0\0" * 2])) + bytes(block)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(block=blocks())
def test_every_block_read_here_gives_pillows_orientation(block: bytes) -> None:
    try:
        ours = exif.orientation(b"Exif\0\0" + block)
    except exif.NotMirrored:
        return  # left to Pillow
    assert ours == pillows_orientation(b"Exif\0\0" + block)


def test_pillow_rewrites_a_plain_block_and_not_one_it_cannot_write_back() -> None:
    assert exif.pillow_rewrites(b"Exif\0\0" + orientation_exif(6))
    garbage_exif_ifd = tiff([(0x0112, 3, 1, b"\0\x06\0\0"), (0x8769, 4, 1, b"\0\0\0\x26")],
                            extra=b"\xff" * 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as pytest runs: Pillow's warning about it is an error
        assert not exif.pillow_rewrites(b"Exif\0\0" + garbage_exif_ifd)


@pytest.mark.parametrize("shape", [(5, 3), (5, 3, 3)], ids=["grey", "rgb"])
@pytest.mark.parametrize("value", range(1, 9))
def test_transpose_turns_pixels_as_exif_transpose_turns_the_image(
    value: int, shape: tuple[int, ...],
) -> None:
    pixels = np.random.default_rng(value).integers(0, 256, shape, dtype=np.uint8)
    img = Image.fromarray(pixels)
    img.info["exif"] = b"Exif\0\0" + orientation_exif(value)
    turned = exif.transpose(pixels, value)
    assert turned.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(turned, np.asarray(ImageOps.exif_transpose(img)))


@pytest.mark.parametrize("value", [None, 0, 9, 0xFFFF])
def test_values_pillow_ignores_leave_the_pixels_as_they_are(value: int | None) -> None:
    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(exif.transpose(pixels, value), pixels)
