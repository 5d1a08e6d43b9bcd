"""Mutated image files for fuzzing the decode path, and a coverage-guided harness.

`make_seeds()` gives small valid files in every accepted format, in the modes and encodings that
take different code paths (palette, 16-bit, CMYK, float, progressive, animated, compressed
TIFF…); `mutate()` damages one the way a fuzzer does (bit flips, interesting integers over
length and size fields, insertions, deletions, truncation; PNG chunk CRCs recomputed half the
time, so the damage gets past the CRC check into the decoder). `decode_outcome()` runs the
service's own decode path (models.images.decode_image, then models.preprocess.image_to_uint8,
as app/inference/predictor.py does) and names what happened: "ok", or the ImageError subclass.
Anything else escapes: that is a bug (the service would answer 500).

    python bench/fuzz_images.py -max_total_time=60      # atheris (pip install atheris)

runs the same check under atheris, coverage-guided over Pillow's Python plugins and ours, from
the seeds; bench/soak.py's fuzz-decode scenario runs the plain mutations at scale.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
PHOTO = REPO / "examples" / "cat.png"

MAX_PIXELS = 40_000_000  # the service's default
TARGET = 32

INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def make_seeds(size: tuple[int, int] = (48, 32)) -> dict[str, bytes]:
    """name → a valid small file; the name starts with its format."""
    from PIL import Image

    with Image.open(PHOTO) as photo:
        rgb = photo.convert("RGB").resize(size)
    grey = rgb.convert("L")

    def enc(img: Image.Image, fmt: str, **params: object) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **params)
        return buf.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    return {
        "png-rgb": enc(rgb, "PNG"),
        "png-rgba": enc(rgb.convert("RGBA"), "PNG"),
        "png-palette-transparent": enc(rgb.convert("P"), "PNG", transparency=0),
        "png-16bit": enc(grey.point(lambda v: v * 200).convert("I;16"), "PNG"),
        "png-1bit": enc(rgb.convert("1"), "PNG"),
        "png-grey-alpha": enc(rgb.convert("LA"), "PNG"),
        "jpeg-baseline": enc(rgb, "JPEG", quality=80),
        "jpeg-progressive-exif": enc(rgb, "JPEG", progressive=True, exif=exif.tobytes()),
        "jpeg-cmyk": enc(rgb.convert("CMYK"), "JPEG"),
        "jpeg-grey": enc(grey, "JPEG"),
        "gif-still": enc(rgb.convert("P"), "GIF", transparency=3),
        "gif-animated": enc(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp-lossy": enc(rgb, "WEBP", quality=70),
        "webp-lossless-rgba": enc(rgb.convert("RGBA"), "WEBP", lossless=True),
        "webp-animated": enc(rgb, "WEBP", save_all=True, append_images=[rgb.rotate(90)]),
        "bmp-rgb": enc(rgb, "BMP"),
        "bmp-palette": enc(rgb.convert("P"), "BMP"),
        "bmp-1bit": enc(rgb.convert("1"), "BMP"),
        "tiff-raw": enc(rgb, "TIFF"),
        "tiff-lzw": enc(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-deflate": enc(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-packbits": enc(rgb, "TIFF", compression="packbits"),
        "tiff-jpeg": enc(rgb, "TIFF", compression="jpeg"),
        "tiff-16bit": enc(grey.convert("I;16"), "TIFF"),
        "tiff-float": enc(grey.convert("F"), "TIFF"),
        "tiff-cmyk": enc(rgb.convert("CMYK"), "TIFF"),
        "tiff-multipage": enc(rgb, "TIFF", save_all=True, append_images=[grey.convert("RGB")]),
    }


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every PNG chunk's CRC (where the chunk lengths still make sense)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack(">I", out[pos:pos + 4])
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end:end + 4] = struct.pack(">I", zlib.crc32(out[pos + 4:end]) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(out)


def mutate(data: bytes, rng: random.Random, seeds: list[bytes] | None = None) -> bytes:
    """One to four random damages of `data`."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out = bytearray(b"\0")
        i = rng.randrange(len(out))
        op = rng.randrange(8)
        if op == 0:
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[i] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op == 2:  # a length, size or offset field set to an interesting integer
            width = rng.choice((2, 4))
            value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            out[i:i + width] = value.to_bytes(width, rng.choice(("big", "little")))
        elif op == 3:
            out[i:i] = rng.randbytes(rng.randint(1, 32))
        elif op == 4:
            del out[i:i + rng.randint(1, 256)]
        elif op == 5:  # repeat a stretch (chunks, markers, IFD entries)
            j = rng.randrange(len(out))
            out[i:i] = out[j:j + rng.randint(1, 512)]
        elif op == 6:
            del out[i:]
        elif seeds:  # splice another file's tail in
            other = rng.choice(seeds)
            out[i:] = other[rng.randrange(len(other)):]
    result = bytes(out)
    return fix_png_crcs(result) if rng.random() < 0.5 else result


def case(index: int, seed: int, names: list[str], seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """The `index`-th mutated file of a campaign: deterministic, so a failure is replayable
    from (seed, index) alone."""
    rng = random.Random(seed * 1_000_003 + index)
    name = names[index % len(names)]
    return name, mutate(seeds[name], rng, list(seeds.values()))


def decode_outcome(data: bytes) -> str:
    """What the service's decode path makes of `data`: "ok" or the ImageError class name.
    Any other exception propagates: it would be a 500."""
    from models.images import ImageError, decode_image
    from models.preprocess import image_to_uint8

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd tags; not an outcome
        try:
            img = decode_image(data, max_pixels=MAX_PIXELS, target_size=TARGET)
            tensor = image_to_uint8(img, TARGET)
        except ImageError as exc:
            return type(exc).__name__
    if tuple(tensor.shape) != (3, TARGET, TARGET):
        raise AssertionError(f"decoded to shape {tuple(tensor.shape)}")
    return "ok"


def _atheris_main() -> None:  # pragma: no cover - needs atheris, run by hand
    import atheris

    with atheris.instrument_imports(include=["PIL", "models"]):
        from PIL import (  # noqa: F401 - the plugins load lazily, so name them here
            BmpImagePlugin,
            GifImagePlugin,
            Image,
            ImageFile,
            ImageOps,
            JpegImagePlugin,
            PngImagePlugin,
            TiffImagePlugin,
            WebPImagePlugin,
        )

        import models.images  # noqa: F401
        import models.preprocess  # noqa: F401
    Image.init()

    def one_input(data: bytes) -> None:
        decode_outcome(data)

    corpus = Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))  # atheris adds what it finds
    for name, data in make_seeds().items():
        (corpus / name).write_bytes(data)
    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main()
