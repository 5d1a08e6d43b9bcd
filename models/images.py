"""Decoding untrusted image bytes: content-sniffed formats, pixel limits, cheap large JPEGs,
fast plain PNGs.

Used by the service for uploads and by the predict CLI for files, so both see the same pixels.
Every failure is an `ImageError` subclass with a message a person can act on; the service maps
each class to an HTTP status.
"""

from __future__ import annotations

import ctypes
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyspng
from PIL import Image, ImageOps  # Image loads PIL._imaging, and with it Pillow's libtiff

# Recognised by content, never by name or Content-Type. Formats whose decoders run external
# programs (EPS through Ghostscript) or parse documents (PDF, SVG) are never even tried.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED = "PNG, JPEG, WebP, GIF, BMP or TIFF"

# Plain 8-bit RGB/RGBA PNGs up to this many pixels are decoded by libspng (pyspng) instead of
# Pillow: the same pixels, 3.0 ms instead of 4.8 ms for the 451×300 examples/cat.png (libspng
# unfilters rows with SIMD, Pillow one byte at a time), and without Pillow's Image.open at all,
# which is most of the cost of a small one (to a tensor: 32×32 53 µs vs 148 µs, 8×8 100 vs
# 145, 128×128 624 vs 924; models.preprocess.decode_to_uint8). pyspng holds the GIL while it
# decodes (~22 ns a pixel here), so images whose decode would stall the event loop for more
# than ~20 ms stay with Pillow, which releases it.
SPNG_MAX_PIXELS = 1 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_START = b"\x00\x00\x00\x0dIHDR"  # its 13-byte length, then its type
_PNG_RGB, _PNG_RGBA = 2, 6  # IHDR colour types
_SPECIAL_CHUNKS = (b"tRNS", b"eXIf", b"acTL")
# ImageMagick writes EXIF into a text chunk under this keyword, and Pillow applies the
# orientation it finds there (Image.getexif), so such a PNG is not plain either.
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_RAW_EXIF_KEYWORD = b"Raw profile type exif\x00"

# Pillow itself refuses images over 2 × MAX_IMAGE_PIXELS; our limit must stay under its
# warning threshold so the clear error below is the one raised.
PILLOW_PIXEL_CEILING = Image.MAX_IMAGE_PIXELS or 89_478_485


def _silence_libtiff() -> bool:
    """Stop libtiff printing a warning or error line to stderr for each damaged TIFF.

    Pillow still raises for those files (its decoder checks libtiff's return codes); the lines
    only bypassed our JSON logs, one or more per hostile upload. libtiff's message handlers are
    process-wide; a NULL handler means "say nothing". Linux only (the library is found among
    the mapped files); elsewhere nothing changes. Returns whether libtiff was found.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    paths = {line.split()[-1] for line in maps.splitlines() if "/libtiff" in line}
    for path in paths:
        lib = ctypes.CDLL(path)  # already loaded: the same instance Pillow uses
        for setter in (lib.TIFFSetWarningHandler, lib.TIFFSetErrorHandler):
            setter.restype = ctypes.c_void_p
            setter.argtypes = [ctypes.c_void_p]
            setter(None)
    return bool(paths)


LIBTIFF_SILENCED = _silence_libtiff()


class ImageError(ValueError):
    """The bytes are not an image we accept."""


class EmptyImageError(ImageError):
    pass


class UnsupportedImageError(ImageError):
    pass


class CorruptImageError(ImageError):
    pass


class ImageTooLargeError(ImageError):
    pass


def _too_many_pixels(max_pixels: int, exc: Exception) -> ImageTooLargeError:
    return ImageTooLargeError(f"the image has more pixels than the limit of {max_pixels:,} ({exc})")


def decode_image(
    data: bytes, *, max_pixels: int, target_size: int, libspng: bool = True
) -> Image.Image:
    """Bytes → a fully decoded PIL image (first frame, EXIF orientation applied, any mode).

    The pixel limit is checked from the header, before any pixel is decoded. Large JPEGs are
    decoded with DCT scaling (draft mode) straight to about `target_size`·8 px, which is
    what makes a 12-megapixel photo cost milliseconds. With `libspng`, plain PNGs of up to
    SPNG_MAX_PIXELS go through libspng (same pixels, faster); without it, Pillow decodes
    everything.
    """
    if not data:
        raise EmptyImageError(f"the upload is empty; send a {ACCEPTED} image")
    if libspng and (pixels := plain_png_pixels(data, max_pixels=max_pixels)) is not None:
        return Image.fromarray(pixels)
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own bomb check fires first for headers claiming over ~89 megapixels.
        raise _too_many_pixels(max_pixels, exc) from None
    except Exception:  # Pillow raises many types for bytes it does not recognise
        raise UnsupportedImageError(
            f"not an image in a supported format; accepted formats are {ACCEPTED}"
        ) from None
    width, height = img.size
    if width < 1 or height < 1:
        raise CorruptImageError(f"the {img.format} header gives an empty size {width}×{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the {img.format} image is {width}×{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}"
        )
    try:
        if img.format in ("JPEG", "MPO"):  # MPO: JPEGs with extra frames (phone photos)
            # Ask for 8× the target: enough for a good antialiased resize afterwards.
            img.draft("RGB", (target_size * 8, target_size * 8))
        img.load()
        return ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(max_pixels, exc) from None
    except Exception as exc:  # truncated data, bad checksums, broken headers, …
        reason = str(exc) or type(exc).__name__
        raise CorruptImageError(
            f"the {img.format} image is truncated or corrupt ({reason})"
        ) from None


def _png_pixels(data: bytes) -> int | None:
    """Width × height from a PNG's IHDR, or None when the bytes do not start like a PNG."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack_from(">II", data, 16)
        return width * height
    return None


def header_pixels(data: bytes) -> int | None:
    """Width × height as the file's header states it, without decoding any pixel; None when
    the bytes are not an image we accept (decode_image then says why). A PNG's size is read
    straight from IHDR; other formats through Pillow's lazy open (tens of µs)."""
    if (pixels := _png_pixels(data)) is not None:
        return pixels
    try:
        width, height = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS).size
    except Exception:  # anything Pillow raises (or warns, under -W error) for bad bytes
        return None
    return width * height


def plain_png(data: bytes) -> bool:
    """An intact 8-bit RGB or RGBA, non-interlaced PNG with nothing Pillow would treat
    specially: no colour-key transparency (tRNS), EXIF orientation (eXIf) or animation (acTL).

    Every chunk's CRC is checked up to IEND (~0.16 ms for examples/cat.png): libspng, as
    pyspng configures it, skips both CRCs and the zlib checksum, so a damaged file would
    decode to garbage instead of being refused. Anything else, odd or damaged, goes to Pillow
    and gets the answer it always got.
    """
    # IHDR comes first: bit depth at byte 24, colour type at 25, interlace method at 28.
    if not (len(data) >= 33 and data.startswith(PNG_SIGNATURE)
            and data.startswith(_IHDR_START, len(PNG_SIGNATURE))
            and data[24] == 8 and data[25] in (_PNG_RGB, _PNG_RGBA) and data[28] == 0):
        return False
    view, pos = memoryview(data), len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        kind = data[pos + 4:pos + 8]
        if end > len(data) or kind in _SPECIAL_CHUNKS or (
                kind in _TEXT_CHUNKS and data.startswith(_RAW_EXIF_KEYWORD, pos + 8)):
            return False
        if zlib.crc32(view[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return False
        if kind == b"IEND":
            return True
        pos = end
    return pos == len(data)  # no IEND (Pillow does without), but no torn chunk either


def plain_png_pixels(data: bytes, *, max_pixels: int) -> np.ndarray | None:
    """The pixels of a `plain_png` of up to SPNG_MAX_PIXELS pixels (and at most
    `max_pixels`), decoded by libspng without Pillow: an H × W × 3 (RGB) or × 4 (RGBA) uint8
    array, the pixels Pillow would give. None for any other bytes, which `decode_image` then
    hands to Pillow. Raises CorruptImageError when libspng finds the data corrupt."""
    pixels = _png_pixels(data)  # the size first: a big file is refused before the CRC pass
    if pixels is None or not 0 < pixels <= min(SPNG_MAX_PIXELS, max_pixels):
        return None
    if not plain_png(data):
        return None
    try:
        return pyspng.load(data, "RGB" if data[25] == _PNG_RGB else "RGBA")
    except RuntimeError as exc:  # pyspng's only error: bad chunks, truncated or corrupt data
        raise CorruptImageError(f"the PNG image is truncated or corrupt ({exc})") from None
