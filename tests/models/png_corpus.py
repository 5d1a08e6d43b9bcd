"""PNG files written byte by byte for the libspng tests: every colour type, bit depth and
interlacing, any chunk anywhere, and what Pillow cannot write (16-bit RGB, 2-bit palettes,
colour keys, EXIF orientations, damaged chunks).

Rows are filtered with all five filter types in turn, so libspng's unfiltering is exercised
for every bytes-per-pixel width. `CountingSpng` stands in for pyspng to tell which decoder a
file went to (the `spng` fixture, tests/models/conftest.py).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pyspng

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type → samples per pixel
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
KINDS = [(colour, depth) for colour, depths in DEPTHS.items() for depth in depths]
# Adam7 passes: first column, first row, column step, row step
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))


class CountingSpng:
    """pyspng, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def load(self, data: bytes, fmt: str | None = None) -> np.ndarray:
        self.calls += 1
        return pyspng.load(data, fmt)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def filtered(rows: np.ndarray, kinds: list[int], bpp: int) -> bytes:
    """PNG scanlines of `rows` (H × row bytes, uint8), row y filtered with kinds[y] (0–4)."""
    out = bytearray()
    prior = [0] * rows.shape[1]
    for row, kind in zip(rows.tolist(), kinds, strict=True):
        line = []
        for i, x in enumerate(row):
            a, c = (row[i - bpp], prior[i - bpp]) if i >= bpp else (0, 0)
            b = prior[i]
            predictor = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            line.append((x - predictor) % 256)
        out += bytes([kind, *line])
        prior = row
    return bytes(out)


def rows_of(samples: np.ndarray, depth: int) -> np.ndarray:
    """H × W × C samples → H × row-bytes uint8: big-endian for 16 bits, packed below 8."""
    height, width, channels = samples.shape
    if depth == 16:
        return samples.astype(">u2").view(np.uint8).reshape(height, -1)
    if depth == 8:
        return samples.astype(np.uint8).reshape(height, -1)
    bits = np.unpackbits(samples.astype(np.uint8)[..., None], axis=-1)[..., 8 - depth:]
    return np.packbits(bits.reshape(height, -1), axis=1)  # pads each row to whole bytes


def image_data(samples: np.ndarray, depth: int, interlace: bool) -> bytes:
    """The filtered scanlines of the whole image, or of each Adam7 pass in turn."""
    bpp = max(1, samples.shape[2] * depth // 8)
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    out = b""
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.size:
            out += filtered(rows_of(sub, depth), [y % 5 for y in range(sub.shape[0])], bpp)
    return out


def encode(samples: np.ndarray, colour: int, depth: int, *, interlace: bool = False,
           before: bytes = b"", after: bytes = b"", idat_chunks: int = 1) -> bytes:
    """A PNG of `samples` (H × W × channels, or H × W): IHDR, `before`, the IDAT chunks,
    `after`, IEND. `before` carries PLTE and tRNS where the colour type needs them."""
    if samples.ndim == 2:
        samples = samples[..., None]
    height, width, _ = samples.shape
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlace))
    data = zlib.compress(image_data(samples, depth, interlace))
    step = -(-len(data) // idat_chunks)
    idats = b"".join(chunk(b"IDAT", data[i:i + step]) for i in range(0, len(data), step))
    return SIGNATURE + chunk(b"IHDR", ihdr) + before + idats + after + chunk(b"IEND", b"")


def make_png(pixels: np.ndarray, kinds: list[int], extra: bytes = b"",
             idat_chunks: int = 1) -> bytes:
    """An 8-bit RGB or RGBA PNG (pixels H × W × 3 or 4), row y filtered with kinds[y]."""
    height, width, channels = pixels.shape
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if channels == 3 else 6, 0, 0, 0)
    data = zlib.compress(filtered(pixels.reshape(height, -1), kinds, channels))
    step = -(-len(data) // idat_chunks)
    idats = b"".join(chunk(b"IDAT", data[i:i + step]) for i in range(0, len(data), step))
    return SIGNATURE + chunk(b"IHDR", ihdr) + extra + idats + chunk(b"IEND", b"")


def random_samples(rng: np.random.Generator, colour: int, depth: int,
                   size: tuple[int, int] = (13, 11)) -> np.ndarray:
    width, height = size
    return rng.integers(0, 1 << depth, (height, width, CHANNELS[colour]), dtype=np.int64)


def palette(entries: int, seed: int = 0) -> bytes:
    """A PLTE chunk of `entries` random colours."""
    return chunk(b"PLTE", np.random.default_rng(seed).integers(
        0, 256, entries * 3, dtype=np.uint8).tobytes())


def with_setup(colour: int, depth: int) -> bytes:
    """What a colour type needs before IDAT: a full palette for colour type 3, else nothing."""
    return palette(1 << depth) if colour == 3 else b""


def tiff(entries: list[tuple[int, int, int, bytes]], order: bytes = b"MM",
         extra: bytes = b"") -> bytes:
    """A TIFF header and IFD0 as an EXIF block holds them: entries are (tag, type, count,
    4-byte value or offset, already in the byte order); `extra` follows the IFD, at offset
    8 + 2 + 12·len(entries) + 4."""
    end = ">" if order == b"MM" else "<"
    head = order + struct.pack(end + "HI", 42, 8)
    ifd = struct.pack(end + "H", len(entries)) + b"".join(
        struct.pack(end + "HHI", tag, typ, count) + value for tag, typ, count, value in entries)
    return head + ifd + struct.pack(end + "I", 0) + extra


def orientation_exif(orientation: int, order: bytes = b"MM") -> bytes:
    """An EXIF block holding only IFD0's Orientation tag (SHORT, count 1)."""
    end = ">" if order == b"MM" else "<"
    return tiff([(0x0112, 3, 1, struct.pack(end + "HH", orientation, 0))], order)
