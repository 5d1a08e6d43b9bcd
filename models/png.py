"""PNGs decoded by libspng (pyspng) into the very image Pillow would give, or left to Pillow.

libspng unfilters rows with SIMD where Pillow goes one byte at a time, and without Pillow's
Image.open a small PNG costs a third (docs/performance.md). pyspng only decodes pixels, so
what else Pillow does with a PNG is done here, the same way:

- every chunk's CRC is checked: pyspng has libspng skip the CRCs and the zlib checksum;
- the chunks Pillow acts on are read as it reads them: the palette, tRNS (kept as
  `img.info["transparency"]`, which models.preprocess.to_rgb composites over white), and
  the EXIF or XMP orientation, applied as `ImageOps.exif_transpose` does (models/exif.py);
  text, ICC and other ancillary chunks only for what would make Pillow refuse the file.
  Pillow applies neither the ICC profile nor gAMA to the pixels, so neither is applied here;
- libspng is handed only IHDR, the image data and IEND, so it never judges an ancillary
  chunk differently from Pillow; a palette image goes to it as the greyscale image of its
  indices (pyspng has no indexed output) and gets its palette back as a "P" image.

Anything not mirrored goes to Pillow, which gives the answer it always gave: APNG, ImageMagick's
"Raw profile type exif" text, a text keyword that Pillow keeps in `img.info` for itself,
damaged, duplicated or misplaced chunks, an EXIF block models/exif.py cannot vouch for, and
any file libspng refuses. One difference is known: libspng accepts image data whose zlib
checksum is wrong where Pillow refuses it; with every CRC right, only a crafted file does that.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pyspng
from PIL import Image, PngImagePlugin

from models import exif

# Up to this many pixels a PNG is decoded by libspng. pyspng holds the GIL while it decodes
# (~22 ns a pixel for 8-bit RGB), so images whose decode would stall the event loop for more
# than ~20 ms stay with Pillow, which releases it. 16-bit images have fewer pixels for the
# same image data (that of a 1-megapixel RGBA8 image, SPNG_MAX_BYTES).
SPNG_MAX_PIXELS = 1 << 20
SPNG_MAX_BYTES = 4 * SPNG_MAX_PIXELS
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_START = b"\x00\x00\x00\x0dIHDR"  # its 13-byte length, then its type
_IEND = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"
_GREY, _RGB, _PALETTE, _GREY_ALPHA, _RGBA = 0, 2, 3, 4, 6  # IHDR colour types
# (colour type, bit depth) → samples per pixel, for those Pillow opens (PngImagePlugin._MODES)
_CHANNELS = {
    **{(_GREY, depth): 1 for depth in (1, 2, 4, 8, 16)},
    **{(_PALETTE, depth): 1 for depth in (1, 2, 4, 8)},
    (_RGB, 8): 3, (_RGB, 16): 3, (_GREY_ALPHA, 8): 2, (_GREY_ALPHA, 16): 2,
    (_RGBA, 8): 4, (_RGBA, 16): 4,
}
_APNG = (b"acTL", b"fcTL", b"fdAT")
# Pillow refuses these chunks when shorter; longer ones it reads the start of.
_MIN_LENGTH = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9}
# Pillow stores a text chunk in img.info under its keyword, where these names are its own:
# under one of them the text would change what Pillow does (transparency, EXIF, interlacing…).
_PILLOW_KEYS = frozenset({
    b"transparency", b"exif", b"Raw profile type exif", b"xmp", b"interlace", b"bbox",
    b"default_image", b"disposal", b"blend", b"duration", b"loop", b"icc_profile", b"gamma",
    b"chromaticity", b"srgb", b"dpi", b"aspect",
})
_XMP_KEYWORD = b"XML:com.adobe.xmp"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # Image.getexif's pattern
_ONE_CLEAR_ENTRY = re.compile(b"^\xff*\x00\xff*$")  # tRNS that Pillow keeps as one index


class _LeaveToPillow(Exception):
    pass


@dataclass(frozen=True)
class PngPlan:
    """What `inspect_png` found: the image data to hand libspng, and what Pillow would do
    with the rest."""

    colour: int
    depth: int
    ihdr: bytes  # the 13 bytes of IHDR's body
    idat: tuple[int, int]  # the run of IDAT chunks in the file: start of the first, end of the last
    palette: bytes | None
    trns: bytes | None
    orientation: int | None  # EXIF or XMP orientation, as exif_transpose reads it


def inspect_png(data: bytes) -> PngPlan | None:
    """How libspng can decode this PNG into Pillow's image; None when it is left to Pillow.
    Every chunk up to IEND is read and CRC-checked (~0.16 ms for examples/cat.png)."""
    try:
        return _inspect(data)
    except (_LeaveToPillow, exif.NotMirrored):
        return None


def _inspect(data: bytes) -> PngPlan:
    if not (len(data) >= 33 and data.startswith(PNG_SIGNATURE)
            and data.startswith(_IHDR_START, len(PNG_SIGNATURE))):
        raise _LeaveToPillow
    depth, colour, compression, filtering, interlace = data[24:29]
    if (colour, depth) not in _CHANNELS or compression or filtering or interlace > 1:
        raise _LeaveToPillow
    view, pos = memoryview(data), len(PNG_SIGNATURE)
    idat: tuple[int, int] | None = None
    palette = trns = block = xmp = None
    text = 0  # text bytes Pillow keeps, which it limits to MAX_TEXT_MEMORY
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        kind = data[pos + 4:pos + 8]
        if end > len(data) or not kind.isalpha():
            raise _LeaveToPillow
        if zlib.crc32(view[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise _LeaveToPillow
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            if idat is not None and idat[1] != pos:
                raise _LeaveToPillow  # Pillow stops reading image data at another chunk
            idat = (pos if idat is None else idat[0], end)
            pos = end
            continue
        body = data[pos + 8:end - 4]
        if pos == len(PNG_SIGNATURE):
            pass  # IHDR, read above
        elif kind == b"PLTE":
            if colour == _PALETTE and idat is None:  # Pillow ignores it anywhere else
                palette = body
        elif kind == b"tRNS":
            if colour in (_GREY_ALPHA, _RGBA):
                pass  # Pillow ignores it there
            elif trns is not None or length < {_GREY: 2, _RGB: 6}.get(colour, 0):
                raise _LeaveToPillow
            else:
                trns = body
        elif kind == b"eXIf":
            if block is not None:
                raise _LeaveToPillow
            block = b"Exif\x00\x00" + body  # as Pillow keeps it
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword, value = _text(kind, body)
            if keyword in _PILLOW_KEYS or (keyword == _XMP_KEYWORD and xmp is not None):
                raise _LeaveToPillow
            if keyword == _XMP_KEYWORD:
                xmp = value
            text += len(value or b"")
        elif kind == b"iCCP":
            _check_iccp(body)
        elif kind in _APNG or kind[0] < ord("a") or length < _MIN_LENGTH.get(kind, 0):
            raise _LeaveToPillow  # APNG; IHDR again or an unknown critical chunk; too short
        pos = end
    else:
        if pos != len(data):
            raise _LeaveToPillow  # a torn chunk (Pillow does without IEND, though)
    if idat is None or text > PngImagePlugin.MAX_TEXT_MEMORY:
        raise _LeaveToPillow
    if colour == _PALETTE and (not palette or len(palette) % 3 or len(palette) > 768):
        raise _LeaveToPillow
    return PngPlan(colour, depth, data[16:29], idat, palette, trns, _orientation(block, xmp))


def _text(kind: bytes, body: bytes) -> tuple[bytes, bytes | None]:
    """A text chunk's keyword and the text Pillow would keep (None: it keeps none), read as
    PngImagePlugin reads it. Raises _LeaveToPillow where Pillow refuses the chunk."""
    keyword, sep, value = body.partition(b"\0")
    if kind == b"tEXt":
        return keyword, (value if keyword else None)
    if kind == b"zTXt":
        if value[:1] not in (b"", b"\0"):
            raise _LeaveToPillow  # an unknown compression method
        text = _inflate(value[1:]) or b""  # inflated (and limited) even without a keyword
        return keyword, (text if keyword else None)
    # iTXt: keyword, compressed flag, compression method, language, translated keyword, text
    if not sep or len(value) < 2:
        return keyword, None
    flag, method, rest = value[0], value[1], value[2:]
    fields = rest.split(b"\0", 2)
    if len(fields) < 3 or (flag and method):
        return keyword, None
    return keyword, _inflate(fields[2]) if flag else fields[2]


def _inflate(data: bytes) -> bytes | None:
    """Compressed text or ICC data inflated as Pillow does: None for data zlib rejects (Pillow
    then keeps nothing); _LeaveToPillow past PngImagePlugin.MAX_TEXT_CHUNK, which it refuses."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, PngImagePlugin.MAX_TEXT_CHUNK)
    except zlib.error:
        return None
    if inflater.unconsumed_tail:
        raise _LeaveToPillow
    return out


def _check_iccp(body: bytes) -> None:
    """Raise _LeaveToPillow for an ICC profile chunk Pillow refuses: no name, a compression
    method other than 0, or a profile over MAX_TEXT_CHUNK. The profile itself is not used."""
    name_end = body.find(b"\0")
    if name_end < 0 or body[name_end + 1:name_end + 2] != b"\0":
        raise _LeaveToPillow
    _inflate(body[name_end + 2:])


def _orientation(block: bytes | None, xmp: bytes | None) -> int | None:
    """The orientation exif_transpose would apply: IFD0's tag, else XMP's tiff:Orientation."""
    value = exif.orientation(block) if block is not None else None
    if value is None and xmp and (match := _XMP_ORIENTATION.search(xmp)):
        value = int(match[2])
    if block is not None and 2 <= (value or 0) <= 8 and not exif.pillow_rewrites(block):
        raise _LeaveToPillow  # turning the image, Pillow would fail to rewrite its EXIF
    return value


def ihdr_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as a PNG's IHDR states them; None when the bytes do not start like a
    PNG. Nothing is checked beyond the signature and the chunk's name."""
    if len(data) >= 24 and data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":
        return struct.unpack_from(">II", data, 16)
    return None


def decode_png(data: bytes, *, max_pixels: int) -> np.ndarray | Image.Image | None:
    """A PNG of up to SPNG_MAX_PIXELS pixels (and at most `max_pixels`) decoded by libspng
    into what Pillow's `ImageOps.exif_transpose(Image.open(…))` would give: an H × W × 3 or 4
    uint8 array for an RGB or RGBA image without a colour key (no PIL image needed), else a
    PIL image in Pillow's mode ("1", "L", "LA", "I;16", "P", "RGB") with its palette and
    `info["transparency"]`. None for any other bytes, and for image data libspng refuses:
    Pillow then decodes them or says why not."""
    if len(data) < 29 or (size := ihdr_size(data)) is None:
        return None
    width, height = size
    bits = width * height * _CHANNELS.get((data[25], data[24]), 0) * data[24]
    if not 0 < width * height <= min(SPNG_MAX_PIXELS, max_pixels) or bits > 8 * SPNG_MAX_BYTES:
        return None  # the size first: a big file is refused before the CRC pass
    plan = inspect_png(data)
    if plan is None:
        return None
    ihdr = plan.ihdr if plan.colour != _PALETTE else plan.ihdr[:9] + b"\0" + plan.ihdr[10:]
    stream = b"".join((PNG_SIGNATURE, _chunk(b"IHDR", ihdr), data[slice(*plan.idat)], _IEND))
    try:
        pixels = _pixels(stream, plan.colour, plan.depth)
    except RuntimeError:  # pyspng's only error: truncated or corrupt image data
        return None
    return _as_pillow_would(exif.transpose(pixels, plan.orientation), plan)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _pixels(stream: bytes, colour: int, depth: int) -> np.ndarray:
    """libspng's pixels, as Pillow's image holds them. libspng keeps the high byte of 16-bit
    samples, as Pillow does for all but greyscale (its "I;16")."""
    if colour in (_RGB, _RGBA):
        return pyspng.load(stream, "RGB" if colour == _RGB else "RGBA")
    if colour == _GREY_ALPHA:  # libspng has no 8-bit grey+alpha output from grey+alpha
        rgba = pyspng.load(stream, "RGBA")
        return rgba if depth == 16 else rgba[..., [0, 3]]  # Pillow: "RGBA" for 16 bits, else "LA"
    if depth == 16:  # greyscale: its own samples, grey + alpha being the only 16-bit output
        return pyspng.load(stream, None)[..., 0]
    levels = pyspng.load(stream, "L")  # 1, 2 and 4-bit samples are scaled to 0–255
    if colour == _PALETTE:
        return levels // (255 // ((1 << depth) - 1))  # back to the palette index
    return levels.astype(bool) if depth == 1 else levels


def _as_pillow_would(pixels: np.ndarray, plan: PngPlan) -> np.ndarray | Image.Image:
    if plan.colour == _RGBA or (plan.colour == _GREY_ALPHA and plan.depth == 16) or \
            (plan.colour == _RGB and plan.trns is None):
        return pixels  # Pillow's "RGB" or "RGBA" image, nothing to add
    img = Image.fromarray(pixels)  # "1", "L", "LA", "I;16" or "RGB"
    if plan.palette is not None:
        img.putpalette(plan.palette)  # "L" becomes "P"
    if plan.trns is not None:
        img.info["transparency"] = _transparency(plan.trns, plan.colour, plan.depth)
    return img


def _transparency(trns: bytes, colour: int, depth: int) -> int | bytes | tuple[int, ...]:
    """tRNS as PngImagePlugin keeps it in img.info["transparency"]."""
    if colour == _PALETTE:  # one fully transparent entry: its index; else each entry's alpha
        return trns.find(b"\0") if _ONE_CLEAR_ENTRY.match(trns) else trns
    if colour == _RGB:
        return struct.unpack_from(">HHH", trns)
    (grey,) = struct.unpack_from(">H", trns)
    return (255 if grey else 0) if depth == 1 else grey
