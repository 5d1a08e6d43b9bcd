"""models/png.py: every PNG that libspng decodes gives Pillow's image (mode, pixels, palette,
transparency, EXIF orientation), so the same tensor; what it does not mirror goes to Pillow
and gets Pillow's answer. Files are written byte by byte (tests/models/png_corpus.py)."""

from __future__ import annotations

import random
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import ImageCms, PngImagePlugin
from png_corpus import (
    KINDS,
    CountingSpng,
    chunk,
    encode,
    orientation_exif,
    palette,
    random_samples,
    tiff,
    with_setup,
)

import models.png
from bench import fuzz_images
from models.images import CorruptImageError, ImageError, ImageTooLargeError, decode_image
from models.png import decode_png, inspect_png
from models.preprocess import decode_to_uint8

MAX = 10_000_000


def outcome(data: bytes, libspng: bool) -> tuple[object, object]:
    """What decode_image and decode_to_uint8 make of the bytes: the image (mode, size, pixels,
    palette, transparency) and the tensors at two sizes, or the ImageError's class name."""
    try:
        img = decode_image(data, max_pixels=MAX, target_size=32, libspng=libspng)
        image: object = (img.mode, img.size, np.asarray(img).tobytes(),
                         img.getpalette() if img.mode == "P" else None,
                         img.info.get("transparency"))
    except ImageError as exc:
        image = type(exc).__name__
    try:
        tensors: object = [decode_to_uint8(data, max_pixels=MAX, size=size, libspng=libspng)
                           .numpy().tobytes() for size in (32, 16)]
    except ImageError as exc:
        tensors = type(exc).__name__
    return image, tensors


def assert_as_pillow(data: bytes, spng: CountingSpng, *, fast: bool = True) -> tuple:
    """Both paths give the same outcome, and libspng decoded it when `fast`."""
    theirs = outcome(data, libspng=False)
    assert spng.calls == 0
    ours = outcome(data, libspng=True)
    assert ours == theirs
    assert (inspect_png(data) is not None) == fast
    if fast:
        assert spng.calls == 3  # decode_image, then decode_to_uint8 twice
    return ours


def sample_png(colour: int = 2, depth: int = 8, *, before: bytes = b"", after: bytes = b"",
               size: tuple[int, int] = (13, 11), interlace: bool = False, seed: int = 0) -> bytes:
    samples = random_samples(np.random.default_rng(seed), colour, depth, size)
    return encode(samples, colour, depth, interlace=interlace,
                  before=with_setup(colour, depth) + before, after=after)


# ---- every colour type, bit depth and interlacing


@pytest.mark.parametrize("size", [(13, 11), (1, 1), (16, 16)], ids=["13x11", "1x1", "16x16"])
@pytest.mark.parametrize("interlace", [False, True], ids=["plain", "adam7"])
@pytest.mark.parametrize(("colour", "depth"), KINDS, ids=[f"type{c}-{d}bit" for c, d in KINDS])
def test_every_colour_type_bit_depth_and_interlacing_gives_pillows_image(
    colour: int, depth: int, interlace: bool, size: tuple[int, int], spng: CountingSpng,
) -> None:
    data = sample_png(colour, depth, size=size, interlace=interlace, seed=colour * 100 + depth)
    assert_as_pillow(data, spng)


def test_palette_indices_past_the_palette_give_pillows_colours(spng: CountingSpng) -> None:
    indices = np.arange(256, dtype=np.int64).reshape(16, 16, 1)
    assert_as_pillow(encode(indices, 3, 8, before=palette(2)), spng)


def test_of_two_palettes_before_the_image_data_pillow_keeps_the_last(spng: CountingSpng) -> None:
    assert_as_pillow(sample_png(3, 4, before=palette(16, seed=1)), spng)


def test_a_suggested_palette_in_an_rgb_png_changes_nothing(spng: CountingSpng) -> None:
    assert_as_pillow(sample_png(2, 8, before=palette(5)), spng)


# ---- transparency: kept as Pillow keeps it, composited over white by models.preprocess


def key_of(colour: int, depth: int, seed: int = 0) -> bytes:
    """A tRNS colour key equal to the image's first pixel (its raw sample values)."""
    first = random_samples(np.random.default_rng(seed), colour, depth)[0, 0]
    return b"".join(struct.pack(">H", int(v)) for v in first)


TRNS_CASES = {
    **{f"grey-{d}bit-key": (0, d, key_of(0, d, 100 + d)) for d in (1, 2, 4, 8, 16)},
    "grey-8bit-absent-key": (0, 8, b"\x01\x00"),
    "rgb-8bit-key": (2, 8, key_of(2, 8, 208)),
    "rgb-16bit-key": (2, 16, key_of(2, 16, 216)),
    "palette-one-clear-entry": (3, 2, b"\xff\x00\xff"),
    "palette-alphas": (3, 4, bytes(range(0, 256, 16))),
    "palette-alphas-short": (3, 8, b"\x00\x80"),
    "palette-alphas-long": (3, 1, b"\x10\x20\x30"),
    "palette-all-opaque": (3, 8, b"\xff\xff"),
    "palette-empty": (3, 8, b""),
    "grey-alpha-ignored": (4, 8, b"\x00\x00"),
    "rgba-ignored": (6, 16, b"\x00" * 6),
}


@pytest.mark.parametrize("after_idat", [False, True], ids=["before-IDAT", "after-IDAT"])
@pytest.mark.parametrize("case", TRNS_CASES)
def test_trns_is_kept_as_pillow_keeps_it(case: str, after_idat: bool, spng: CountingSpng) -> None:
    colour, depth, body = TRNS_CASES[case]
    trns = chunk(b"tRNS", body)
    data = sample_png(colour, depth, seed=100 * colour + depth,
                      before=b"" if after_idat else trns, after=trns if after_idat else b"")
    assert_as_pillow(data, spng)


@pytest.mark.parametrize(
    ("colour", "body"),
    [(0, b"\x00"), (2, b"\x00\x01\x00\x02"), (3, b"\x00")],
    ids=["grey-short", "rgb-short", "palette-twice"],
)
def test_a_trns_pillow_refuses_or_a_second_one_is_left_to_it(
    colour: int, body: bytes, spng: CountingSpng,
) -> None:
    before = chunk(b"tRNS", body) * (2 if colour == 3 else 1)
    assert_as_pillow(sample_png(colour, 8, before=before), spng, fast=False)


# ---- ancillary chunks: no reason to leave a PNG to Pillow


def text_chunk(kind: bytes, keyword: bytes, text: bytes) -> bytes:
    if kind == b"tEXt":
        return chunk(kind, keyword + b"\0" + text)
    if kind == b"zTXt":
        return chunk(kind, keyword + b"\0\0" + zlib.compress(text))
    compressed = kind == b"iTXt+z"  # iTXt, compressed
    body = text if not compressed else zlib.compress(text)
    return chunk(b"iTXt", keyword + b"\0" + bytes([compressed, 0]) + b"en\0Title\0" + body)


def iccp(profile: bytes, name: bytes = b"ICC profile", method: int = 0) -> bytes:
    return chunk(b"iCCP", name + b"\0" + bytes([method]) + zlib.compress(profile))


LAB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
ANCILLARY = {
    "iCCP": iccp(LAB_PROFILE),
    "iCCP-not-zlib": chunk(b"iCCP", b"name\0\0not zlib"),
    "gAMA": chunk(b"gAMA", struct.pack(">I", 10_000)),
    "gAMA-long": chunk(b"gAMA", struct.pack(">II", 45_455, 0)),
    "cHRM": chunk(b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000,
                                       15000, 6000)),
    "sRGB": chunk(b"sRGB", b"\0"),
    "pHYs": chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
    "sBIT": chunk(b"sBIT", b"\x05\x05\x05"),
    "bKGD": chunk(b"bKGD", b"\0\1\0\2\0\3"),
    "tIME": chunk(b"tIME", struct.pack(">HBBBBB", 2026, 13, 40, 25, 61, 61)),  # nonsense date
    "hIST": chunk(b"hIST", b"\0\1"),
    "private": chunk(b"prVt", b"anything"),
    "tEXt": text_chunk(b"tEXt", b"Comment", b"taken on a phone"),
    "tEXt-no-keyword": chunk(b"tEXt", b"\0text without a keyword"),
    "tEXt-no-nul": chunk(b"tEXt", b"Software"),
    "zTXt": text_chunk(b"zTXt", b"Comment", b"x" * 5000),
    "zTXt-not-zlib": chunk(b"zTXt", b"Comment\0\0not zlib"),
    "iTXt": text_chunk(b"iTXt", b"Description", "café".encode()),
    "iTXt-compressed": text_chunk(b"iTXt+z", b"Description", "café".encode()),
    "iTXt-not-utf8": text_chunk(b"iTXt", b"Description", b"\xff\xfe"),
    "iTXt-torn": chunk(b"iTXt", b"Description\0\0"),
    "eXIf-orientation-1": chunk(b"eXIf", orientation_exif(1)),
}


def with_chunk(extra: bytes, after_idat: bool) -> bytes:
    """The sample PNG carrying `extra` chunk bytes before or after its image data."""
    return sample_png(before=b"" if after_idat else extra, after=extra if after_idat else b"")


@pytest.mark.parametrize("after_idat", [False, True], ids=["before-IDAT", "after-IDAT"])
@pytest.mark.parametrize("name", ANCILLARY)
def test_ancillary_chunks_do_not_keep_a_png_from_libspng(
    name: str, after_idat: bool, spng: CountingSpng,
) -> None:
    assert_as_pillow(with_chunk(ANCILLARY[name], after_idat), spng)


@pytest.mark.parametrize(("colour", "depth"), KINDS, ids=[f"type{c}-{d}bit" for c, d in KINDS])
def test_every_colour_type_with_all_ancillary_chunks_at_once(
    colour: int, depth: int, spng: CountingSpng,
) -> None:
    everything = b"".join(ANCILLARY.values())
    assert_as_pillow(sample_png(colour, depth, before=everything, interlace=True), spng)


def test_pillow_applies_neither_an_icc_profile_nor_gamma_to_the_pixels(
    spng: CountingSpng,
) -> None:
    samples = random_samples(np.random.default_rng(5), 2, 8)
    colour_managed = ANCILLARY["iCCP"] + ANCILLARY["gAMA"] + ANCILLARY["cHRM"]
    data = encode(samples, 2, 8, before=colour_managed)
    img = decode_image(data, max_pixels=MAX, target_size=32, libspng=False)
    assert img.info["icc_profile"] == LAB_PROFILE and img.info["gamma"] == 0.1
    np.testing.assert_array_equal(np.asarray(img), samples)  # the samples as stored
    assert_as_pillow(data, spng)


def bomb() -> bytes:
    """Compressed data that inflates past Pillow's limit for text and ICC profiles."""
    return zlib.compress(b"\0" * (PngImagePlugin.MAX_TEXT_CHUNK + 1))


LEFT_TO_PILLOW = {
    "gAMA-short": chunk(b"gAMA", b"\0\0\1"),
    "cHRM-short": chunk(b"cHRM", bytes(31)),
    "sRGB-empty": chunk(b"sRGB", b""),
    "pHYs-short": chunk(b"pHYs", bytes(8)),
    "iCCP-no-name-end": chunk(b"iCCP", b"profile"),
    "iCCP-method-1": iccp(LAB_PROFILE, method=1),
    "iCCP-bomb": chunk(b"iCCP", b"name\0\0" + bomb()),
    "zTXt-method-1": chunk(b"zTXt", b"Comment\0\1" + zlib.compress(b"x")),
    "zTXt-bomb": chunk(b"zTXt", b"Comment\0\0" + bomb()),
    "zTXt-bomb-no-keyword": chunk(b"zTXt", b"\0\0" + bomb()),
    "iTXt-bomb": chunk(b"iTXt", b"Comment\0\1\0\0\0" + bomb()),
    **{f"keyword-{k}": text_chunk(b"tEXt", k.encode(), b"1")
       for k in ("transparency", "interlace", "exif", "xmp", "Raw profile type exif", "bbox")},
    "keyword-dpi-iTXt": text_chunk(b"iTXt", b"dpi", b"72"),
    "APNG": chunk(b"acTL", struct.pack(">II", 1, 0)),
    "fcTL": chunk(b"fcTL", bytes(26)),
    "critical-unknown": chunk(b"CRIT", b""),
    "IHDR-again": chunk(b"IHDR", struct.pack(">IIBBBBB", 13, 11, 8, 2, 0, 0, 0)),
    "digit-in-type": chunk(b"pHY5", b""),
    "two-eXIf": chunk(b"eXIf", orientation_exif(1)) * 2,
    "two-XMP": text_chunk(b"tEXt", b"XML:com.adobe.xmp", b"") * 2,
}


@pytest.mark.parametrize("after_idat", [False, True], ids=["before-IDAT", "after-IDAT"])
@pytest.mark.parametrize("name", LEFT_TO_PILLOW)
def test_chunks_pillow_refuses_or_acts_on_leave_the_png_to_it(
    name: str, after_idat: bool, spng: CountingSpng,
) -> None:
    assert_as_pillow(with_chunk(LEFT_TO_PILLOW[name], after_idat), spng, fast=False)


def test_image_data_split_by_another_chunk_is_left_to_pillow(spng: CountingSpng) -> None:
    data = sample_png(size=(40, 30))
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack_from(">I", data, start)
    body = data[start + 8:start + 8 + length]
    split = (chunk(b"IDAT", body[:50]) + ANCILLARY["tEXt"] + chunk(b"IDAT", body[50:]))
    data = data[:start] + split + data[start + 12 + length:]
    outcome_ = assert_as_pillow(data, spng, fast=False)
    assert outcome_[0] == "CorruptImageError"  # Pillow stops reading image data at tEXt


# ---- EXIF and XMP orientation


@pytest.mark.parametrize("after_idat", [False, True], ids=["before-IDAT", "after-IDAT"])
@pytest.mark.parametrize("order", [b"MM", b"II"])
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("colour", "depth"), [(2, 8), (6, 16), (3, 4), (0, 1), (4, 8)],
                         ids=["rgb", "rgba16", "palette", "1-bit", "grey-alpha"])
def test_exif_orientation_turns_the_image_as_exif_transpose_does(
    colour: int, depth: int, orientation: int, order: bytes, after_idat: bool,
    spng: CountingSpng,
) -> None:
    exif = chunk(b"eXIf", orientation_exif(orientation, order))
    data = sample_png(colour, depth, size=(7, 4), before=b"" if after_idat else exif,
                      after=exif if after_idat else b"")
    image, _ = assert_as_pillow(data, spng)
    assert image[1] == ((4, 7) if orientation >= 5 else (7, 4))


def xmp(value: bytes) -> bytes:
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
            b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
            + value + b"</rdf:Description></rdf:RDF></x:xmpmeta>")


XMP_CASES = {
    "iTXt-attribute": (text_chunk(b"iTXt", b"XML:com.adobe.xmp", xmp(b' tiff:Orientation="6">')),
                       (11, 13)),
    "iTXt-element": (text_chunk(b"iTXt", b"XML:com.adobe.xmp",
                                xmp(b"><tiff:Orientation>8</tiff:Orientation>")), (11, 13)),
    "iTXt-compressed": (text_chunk(b"iTXt+z", b"XML:com.adobe.xmp", xmp(b' tiff:Orientation="3">')),
                        (13, 11)),
    "iTXt-not-utf8": (text_chunk(b"iTXt", b"XML:com.adobe.xmp",
                                 b"\xff" + xmp(b' tiff:Orientation="5">')), (11, 13)),
    "tEXt": (text_chunk(b"tEXt", b"XML:com.adobe.xmp", xmp(b' tiff:Orientation="7">')), (11, 13)),
    "zTXt": (text_chunk(b"zTXt", b"XML:com.adobe.xmp", xmp(b' tiff:Orientation="2">')), (13, 11)),
    "value-9": (text_chunk(b"iTXt", b"XML:com.adobe.xmp", xmp(b' tiff:Orientation="9">')),
                (13, 11)),
    "exif-says-1": (chunk(b"eXIf", orientation_exif(1)) + text_chunk(
        b"iTXt", b"XML:com.adobe.xmp", xmp(b' tiff:Orientation="6">')), (13, 11)),
    "exif-without-orientation": (chunk(b"eXIf", tiff([(0x0131, 2, 4, b"abc\0")])) + text_chunk(
        b"iTXt", b"XML:com.adobe.xmp", xmp(b' tiff:Orientation="6">')), (11, 13)),
}


@pytest.mark.parametrize("case", XMP_CASES)
def test_xmp_orientation_turns_the_image_as_pillow_reads_it(
    case: str, spng: CountingSpng,
) -> None:
    extra, size = XMP_CASES[case]
    image, _ = assert_as_pillow(sample_png(before=extra), spng)
    assert image[1] == size


def entry(tag: int, kind: int, count: int, value: bytes) -> tuple[int, int, int, bytes]:
    return tag, kind, count, value


SIX = entry(0x0112, 3, 1, b"\0\x06\0\0")
# (EXIF block, whether models/exif.py reads it itself): Pillow's answer either way
BROKEN_EXIF = {
    "empty": (b"", True),
    "prefix-only": (b"Exif\0\0", True),
    "one-prefix": (b"Exif\0\0" + orientation_exif(6), True),
    "two-prefixes": (b"Exif\0\0" * 2 + orientation_exif(6), False),
    "header-only": (b"MM\0*", False),
    "bad-magic": (b"MX\0*" + orientation_exif(6)[4:], False),
    "bigtiff": (b"MM\0+\0\x08\0\0" + bytes(16), False),
    "ifd-past-the-end": (b"MM\0*\0\0\x01\0", False),
    "ifd-at-the-header": (b"MM\0*\0\0\0\0" + bytes(40), False),
    "entries-past-the-end": (tiff([SIX])[:-6], False),
    "no-next-ifd-offset": (tiff([SIX])[:-4], False),
    "value-past-the-end": (tiff([entry(0x010F, 2, 20, b"\0\0\0\x1a"), SIX]), False),
    "values-larger-than-the-block": (tiff([entry(0x010F, 2, 30, b"\0\0\0\x08"),
                                           entry(0x0110, 2, 30, b"\0\0\0\x08"), SIX],
                                          extra=bytes(8)), False),
    "orientation-long": (tiff([entry(0x0112, 4, 1, b"\0\0\0\x06")]), False),
    "orientation-two-values": (tiff([entry(0x0112, 3, 2, b"\0\x06\0\x01")]), False),
    "orientation-0": (tiff([entry(0x0112, 3, 1, b"\0\0\0\0")]), True),
    "orientation-9": (tiff([entry(0x0112, 3, 1, b"\0\x09\0\0")]), True),
    "orientation-65535": (tiff([entry(0x0112, 3, 1, b"\xff\xff\0\0")]), True),
    "orientation-twice": (tiff([SIX, entry(0x0112, 3, 1, b"\0\x03\0\0")]), True),
    "unknown-type-first": (tiff([entry(0x0112, 99, 1, b"\0\x03\0\0"), SIX]), True),
    "no-values-first": (tiff([entry(0x0112, 3, 0, b"\0\x03\0\0"), SIX]), True),
    "duplicate-past-the-end": (tiff([SIX, entry(0x0112, 2, 99, b"\0\0\xff\xff")]), True),
    "exif-ifd-of-garbage": (tiff([SIX, entry(0x8769, 4, 1, b"\0\0\0\x26")], extra=b"\xff" * 9),
                            None),
    "gps-ifd-past-the-end": (tiff([SIX, entry(0x8825, 4, 1, b"\0\0\x10\0")]), None),
}


@pytest.mark.parametrize("warn", ["error", "ignore"])
@pytest.mark.parametrize("case", BROKEN_EXIF)
def test_a_broken_exif_block_gets_what_exif_transpose_makes_of_it(
    case: str, warn: str, spng: CountingSpng,
) -> None:
    block, mirrored = BROKEN_EXIF[case]
    data = sample_png(before=chunk(b"eXIf", block))
    with warnings.catch_warnings():
        warnings.simplefilter(warn)  # pytest's "error" turns Pillow's EXIF warnings into errors
        theirs = outcome(data, libspng=False)
        ours = outcome(data, libspng=True)
    assert ours == theirs
    if mirrored is not None:
        assert (inspect_png(data) is not None) == mirrored


# ---- the same errors from either path


def rewrite_ihdr(data: bytes, width: int, height: int) -> bytes:
    body = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + chunk(b"IHDR", body) + data[33:]


def idat_body(data: bytes) -> tuple[int, bytes]:
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack_from(">I", data, start)
    return start, data[start + 8:start + 8 + length]


def with_idat(data: bytes, body: bytes) -> bytes:
    start, old = idat_body(data)
    return data[:start] + chunk(b"IDAT", body) + data[start + 12 + len(old):]


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


# damage → (the error, whether libspng was tried); None: Pillow decodes it (IDAT's CRC unchecked)
DAMAGES = {
    "truncated-IDAT": (lambda d: with_idat(d, idat_body(d)[1][:len(idat_body(d)[1]) // 2]),
                       "CorruptImageError", True),
    "zero-length-IDAT": (lambda d: with_idat(d, b""), "CorruptImageError", True),
    "bad-CRC-damaged-IDAT": (lambda d: flip(d, d.index(b"IDAT") + 200), "CorruptImageError",
                             False),
    "bad-CRC-of-intact-IDAT": (lambda d: flip(d, len(d) - 13), None, False),
    "bad-CRC-before-IDAT": (lambda d: d[:33] + flip(chunk(b"tEXt", b"a\0b"), 14) + d[33:],
                            "UnsupportedImageError", False),
    "100000x100000": (lambda d: rewrite_ihdr(d, 100_000, 100_000), "ImageTooLargeError", False),
}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize(("colour", "depth", "interlace"), [
    (2, 8, False), (3, 4, True), (0, 16, False), (4, 8, True), (6, 16, False)])
def test_a_damaged_png_gets_the_same_image_error_from_either_path(
    colour: int, depth: int, interlace: bool, damage: str, spng: CountingSpng,
) -> None:
    damaged, error, tried = DAMAGES[damage]
    data = damaged(sample_png(colour, depth, size=(40, 30), interlace=interlace,
                              before=chunk(b"tRNS", b"\0\0") if colour == 3 else b""))
    theirs = outcome(data, libspng=False)
    assert outcome(data, libspng=True) == theirs
    assert theirs == (error, error) if error else isinstance(theirs[0], tuple)
    assert (spng.calls > 0) == tried  # libspng refused it, then Pillow said why


def test_what_libspng_refuses_goes_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def load(self, data: bytes, fmt: str | None = None) -> None:
            raise RuntimeError("pyspng: could not decode image: (a libspng refusal)")

    data = sample_png(3, 2, before=chunk(b"tRNS", b"\0"))
    theirs = outcome(data, libspng=False)
    monkeypatch.setattr(models.png, "pyspng", Refusing())
    assert decode_png(data, max_pixels=MAX) is None
    assert outcome(data, libspng=True) == theirs


def test_a_wrong_zlib_checksum_is_the_one_known_difference(spng: CountingSpng) -> None:
    data = sample_png()
    _, body = idat_body(data)
    data = with_idat(data, body[:-1] + bytes([body[-1] ^ 1]))  # chunk CRC right, Adler-32 not
    with pytest.raises(CorruptImageError, match="broken data stream"):
        decode_image(data, max_pixels=MAX, target_size=32, libspng=False)
    assert decode_image(data, max_pixels=MAX, target_size=32).size == (13, 11)


def test_a_png_over_the_callers_pixel_limit_is_refused_as_before(spng: CountingSpng) -> None:
    with pytest.raises(ImageTooLargeError, match="the limit is 142"):
        decode_to_uint8(sample_png(3, 8), max_pixels=142, size=32)
    assert spng.calls == 0


# ---- fuzzed files: the same answer from either path


def zlib_checksum_is_wrong(data: bytes) -> bool:
    """For a file libspng decodes: its image data inflate, but to a wrong Adler-32."""
    plan = inspect_png(data)
    if plan is None:
        return False
    stream, pos = b"", plan.idat[0]
    while pos < plan.idat[1]:
        (length,) = struct.unpack_from(">I", data, pos)
        stream += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    try:
        zlib.decompress(stream)
    except zlib.error as exc:
        return "incorrect data check" in str(exc)
    return False


def fuzz_seeds() -> dict[str, bytes]:
    seeds = {name: data for name, data in fuzz_images.make_seeds().items()
             if name.startswith("png")}
    exif = chunk(b"eXIf", orientation_exif(6, b"II"))
    seeds["png-palette-2bit-trns-adam7"] = sample_png(3, 2, before=chunk(b"tRNS", b"\0\x80"),
                                                      size=(24, 16), interlace=True)
    seeds["png-grey16-key"] = sample_png(0, 16, before=chunk(b"tRNS", b"\1\0"), size=(24, 16))
    seeds["png-rgb-exif-iccp-text"] = sample_png(
        before=exif + ANCILLARY["iCCP"] + ANCILLARY["zTXt"], size=(24, 16))
    return seeds


def test_fuzzed_pngs_get_the_same_answer_from_either_path() -> None:
    seeds = fuzz_seeds()
    names = sorted(seeds)
    assert all(inspect_png(seeds[name]) is not None for name in names)  # each seed is fast
    fast = 0
    for index in range(400):
        rng = random.Random(index)
        data = fuzz_images.mutate(seeds[names[index % len(names)]], rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as in production: Pillow's warnings are not errors
            ours, theirs = outcome(data, libspng=True), outcome(data, libspng=False)
        fast += inspect_png(data) is not None
        if ours != theirs:
            assert theirs == ("CorruptImageError",) * 2 and zlib_checksum_is_wrong(data), index
    assert fast >= 50  # files that reached libspng: damage with CRCs recomputed (60 of 400)
