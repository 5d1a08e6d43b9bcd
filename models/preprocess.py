"""Preprocessing shared by training, evaluation, the predict CLI and the service.

Upload bytes → decoded image (models/images.py) → RGB → resized to `size`×`size`
(antialiased) → uint8 CHW tensor; then a whole batch is normalised with the checkpoint's mean
and std. Training keeps the uint8 tensors in memory and normalises per batch, so every side
runs the same two steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from models.images import decode_image
from models.png import decode_png

# The tutorial feeds `ToTensor()` output straight in: no normalisation.
TUTORIAL_MEAN = (0.0, 0.0, 0.0)
TUTORIAL_STD = (1.0, 1.0, 1.0)

# What a transparent pixel is shown over, as a browser would show it on a white page.
ALPHA_BACKGROUND = (255, 255, 255)

RESAMPLE = Image.Resampling.BILINEAR  # antialiased in Pillow when shrinking


def _scale_high_bit_depth(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float greyscale → 8-bit 'L' by scaling, not clipping."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if arr.size and arr.max() <= 1.0 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255)
    else:
        # 'I;16*' holds 0…65535; 'I' (32-bit) is how Pillow often opens 16-bit PNGs.
        arr = np.clip(arr.astype(np.int64), 0, 65535) / 257.0
    return Image.fromarray(np.rint(arr).astype(np.uint8))  # 2-D uint8 → mode "L"


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB. Transparency is composited over white."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if "transparency" in img.info and img.mode in ("P", "L", "RGB"):
        # A palette entry or colour key marked transparent: make it real alpha first.
        img = img.convert("RGBA")
    if img.mode == "P":
        img = img.convert("RGB")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _scale_high_bit_depth(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize(img: Image.Image, size: int) -> Image.Image:
    """Squash to size×size like the tutorial's `Resize((32, 32))`; no-op when already there."""
    if img.size == (size, size):
        return img
    # reducing_gap: a box reduce first, then bilinear; near-identical output, far faster on
    # multi-megapixel images.
    return img.resize((size, size), RESAMPLE, reducing_gap=3.0)


def image_to_uint8(img: Image.Image, size: int) -> torch.Tensor:
    """A PIL image of any mode → uint8 tensor of shape (3, size, size)."""
    arr = np.asarray(resize(to_rgb(img), size), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def decode_to_uint8(
    data: bytes, *, max_pixels: int, size: int, libspng: bool = True
) -> torch.Tensor:
    """Upload bytes → uint8 tensor (3, size, size): `decode_image`, then `image_to_uint8`.
    An opaque RGB PNG that libspng decodes at size×size already (a CIFAR-sized upload) skips
    Pillow altogether: the same pixels, in about a third of the time for a 32×32 PNG. Raises
    models.images.ImageError for bytes that are not an image we accept."""
    decoded = decode_png(data, max_pixels=max_pixels) if libspng else None
    if isinstance(decoded, np.ndarray) and decoded.shape == (size, size, 3):
        return torch.from_numpy(decoded).permute(2, 0, 1)
    if isinstance(decoded, np.ndarray):
        img = Image.fromarray(decoded)
    elif decoded is not None:  # a PIL image in Pillow's mode ("P", "L", …)
        img = decoded
    else:  # left to Pillow, or libspng off (the libspng path was tried above)
        img = decode_image(data, max_pixels=max_pixels, target_size=size, libspng=False)
    return image_to_uint8(img, size)


def normalize(
    batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 (N, 3, H, W) or (3, H, W) → float32 in [0, 1], then (x − mean) / std per channel."""
    shape = (3, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(shape)
    return (batch.to(torch.float32) / 255.0 - m) / s


def preprocess(
    img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """One image → the float (3, size, size) tensor the network takes."""
    return normalize(image_to_uint8(img, size), mean, std)
