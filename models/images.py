"""Decoding untrusted image bytes: content-sniffed formats, pixel limits, cheap large JPEGs,
fast PNGs (libspng, models/png.py).

Used by the service for uploads and by the predict CLI for files, so both see the same pixels.
Every failure is an `ImageError` subclass with a message a person can act on; the service maps
each class to an HTTP status.
"""

from __future__ import annotations

import ctypes
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps  # Image loads PIL._imaging, and with it Pillow's libtiff

from models.png import decode_png, ihdr_size

# Recognised by content, never by name or Content-Type. Formats whose decoders run external
# programs (EPS through Ghostscript) or parse documents (PDF, SVG) are never even tried.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED = "PNG, JPEG, WebP, GIF, BMP or TIFF"

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
    what makes a 12-megapixel photo cost milliseconds. With `libspng`, PNGs of up to
    SPNG_MAX_PIXELS go through libspng where it gives Pillow's image (models/png.py says
    which); without it, Pillow decodes everything.
    """
    if not data:
        raise EmptyImageError(f"the upload is empty; send a {ACCEPTED} image")
    if libspng and (decoded := decode_png(data, max_pixels=max_pixels)) is not None:
        return Image.fromarray(decoded) if isinstance(decoded, np.ndarray) else decoded
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
        img = ImageOps.exif_transpose(img)  # a new image: its info is ours to change
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(max_pixels, exc) from None
    except Exception as exc:  # truncated data, bad checksums, broken headers, …
        reason = str(exc) or type(exc).__name__
        raise CorruptImageError(
            f"the {img.format} image is truncated or corrupt ({reason})"
        ) from None
    if isinstance(img.info.get("transparency"), str):
        # A PNG text chunk named "transparency", not a tRNS chunk: converting the image
        # with it would raise TypeError.
        del img.info["transparency"]
    return img


def header_pixels(data: bytes) -> int | None:
    """Width × height as the file's header states it, without decoding any pixel; None when
    the bytes are not an image we accept (decode_image then says why). A PNG's size is read
    straight from IHDR; other formats through Pillow's lazy open (tens of µs)."""
    if (size := ihdr_size(data)) is not None:
        return size[0] * size[1]
    try:
        width, height = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS).size
    except Exception:  # anything Pillow raises (or warns, under -W error) for bad bytes
        return None
    return width * height
