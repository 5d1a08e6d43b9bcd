"""EXIF orientation read the way Pillow reads it, for images decoded without Pillow.

`orientation()` gives what `PIL.ImageOps.exif_transpose` finds in IFD0's Orientation tag of
an EXIF block, and `transpose()` turns pixels as it turns the image. Only well-formed blocks
are read: one that Pillow would warn about, fail on, or read in ways not mirrored here
(BigTIFF, an Orientation that is not one SHORT) raises `NotMirrored`, and the caller leaves
the whole image to Pillow, which gives the answer it always gave.
"""

from __future__ import annotations

import re
import struct

import numpy as np
from PIL import Image

ORIENTATION = 0x0112
_SHORT = 3
# Bytes per value of the TIFF field types Pillow reads (TiffImagePlugin's loaders); entries of
# any other type are skipped without a word, by Pillow and here.
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               13: 4, 16: 8}
_APP1_PREFIX = re.compile(b"^(Exif\x00\x00){1,2}")  # Pillow strips one or two of these
_HEADERS = {b"II*\x00": "<", b"MM\x00*": ">"}


class NotMirrored(ValueError):
    """An EXIF block this module does not read exactly as Pillow does."""


def orientation(block: bytes) -> int | None:
    """IFD0's Orientation in `block` (EXIF as Pillow keeps it in img.info["exif"]), or None
    when the block has no such tag. exif_transpose turns the image for values 2 to 8.

    Pillow reads IFD0 entry by entry: the first entry of a tag wins, entries of an unknown
    type or no values are skipped, and a value stored past the end of the block (or out-of-
    line values adding up to more than the block) makes it warn and stop; so that, a short
    header or IFD, or an odd Orientation entry raise NotMirrored here.
    """
    data = _APP1_PREFIX.sub(b"", block)
    if not data:
        return None
    if len(data) < 8 or data[:4] not in _HEADERS:
        raise NotMirrored("not a classic TIFF header")
    end = _HEADERS[data[:4]]
    (ifd,) = struct.unpack_from(end + "I", data, 4)
    if ifd + 2 > len(data):
        raise NotMirrored("IFD0 starts past the end of the block")
    (count,) = struct.unpack_from(end + "H", data, ifd)
    first, last = ifd + 2, ifd + 2 + 12 * count
    if last + 4 > len(data):  # the entries, then the offset of the next IFD
        raise NotMirrored("IFD0 runs past the end of the block")
    stored: set[int] = set()
    out_of_line = 0
    value = None
    for pos in range(first, last, 12):
        tag, kind, n = struct.unpack_from(end + "HHI", data, pos)
        if tag in stored or kind not in _TYPE_SIZES or n == 0:
            continue
        size = n * _TYPE_SIZES[kind]
        if size > 4:
            (offset,) = struct.unpack_from(end + "I", data, pos + 8)
            out_of_line += size
            if out_of_line > len(data) or offset + size > len(data):
                raise NotMirrored(f"the value of tag {tag:#06x} lies past the end of the block")
        stored.add(tag)
        if tag == ORIENTATION:
            if kind != _SHORT or n != 1:
                raise NotMirrored(f"an Orientation of type {kind} with {n} values")
            (value,) = struct.unpack_from(end + "H", data, pos + 8)
    return value


def pillow_rewrites(block: bytes) -> bool:
    """Whether exif_transpose, having turned an image, can store its EXIF without the
    Orientation tag, as it does: that parses all of IFD0 and the Exif and GPS IFDs, so it is
    left to Pillow's own code. False where that raises, or warns under warnings-as-errors."""
    exif = Image.Exif()
    try:
        exif.load(block)
        if ORIENTATION in exif:
            del exif[ORIENTATION]
        exif.tobytes()
    except Exception:  # whatever Pillow raises for a block it cannot write back
        return False
    return True


def transpose(pixels: np.ndarray, value: int | None) -> np.ndarray:
    """An H × W (× C) array turned as exif_transpose turns an image of EXIF orientation
    `value` (C-contiguous, as torch.from_numpy needs); unchanged for 1, None and values
    outside 1–8, which Pillow ignores."""
    if value == 2:  # Pillow's FLIP_LEFT_RIGHT
        pixels = pixels[:, ::-1]
    elif value == 3:  # ROTATE_180
        pixels = pixels[::-1, ::-1]
    elif value == 4:  # FLIP_TOP_BOTTOM
        pixels = pixels[::-1]
    elif value == 5:  # TRANSPOSE: across the main diagonal
        pixels = pixels.swapaxes(0, 1)
    elif value == 6:  # ROTATE_270: a quarter turn clockwise
        pixels = np.rot90(pixels, -1)
    elif value == 7:  # TRANSVERSE: across the other diagonal
        pixels = pixels[::-1, ::-1].swapaxes(0, 1)
    elif value == 8:  # ROTATE_90: a quarter turn anticlockwise
        pixels = np.rot90(pixels, 1)
    return np.ascontiguousarray(pixels)
