"""Datasets as in-memory uint8 tensors: decoded once, cached on disk, split by class.

Every image file goes through `models.preprocess.decode_to_uint8` (arrays through
`image_to_uint8`), the functions the service uses, so training, evaluation and serving see the
same pixels.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from models.checkpoint import atomic_torch_save
from models.classes import CIFAR10_CLASSES
from models.images import PILLOW_PIXEL_CEILING, ImageError
from models.preprocess import decode_to_uint8, image_to_uint8

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
DATASETS = ("cifar10", "folder")
CACHE_VERSION = 1


class DatasetError(Exception):
    """The data the user pointed at cannot be used; the message says what to do."""


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, 3, S, S)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    source: str  # which dataset, for the checkpoint's meta: a name, never a path

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes, self.source)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-serve"


def _list_folder(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(
        p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if len(classes) < 2:
        raise DatasetError(
            f"{split_dir} must hold one folder per class (at least 2), found {len(classes)}"
        )
    files = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((split_dir / name).rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {split_dir}")
    return classes, files


def _fingerprint(files: list[tuple[Path, int]], size: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} size={size}".encode())
    for path, label in files:
        stat = path.stat()
        digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _decode(path: Path, size: int) -> torch.Tensor:
    """The service's own decoding (formats, EXIF orientation, JPEG draft), then preprocessing."""
    try:
        return decode_to_uint8(path.read_bytes(), max_pixels=PILLOW_PIXEL_CEILING, size=size)
    except (OSError, ImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def _source(split_dir: Path) -> str:
    """~/.cache/cifar10/train → "cifar10": the dataset's name, not the machine's folders."""
    return split_dir.resolve().parent.name


def load_folder(split_dir: Path, size: int, cache_dir: Path | None, progress: bool) -> ImageSet:
    """`split_dir/<class>/*` → an ImageSet; decoded with threads (Pillow releases the GIL)."""
    classes, files = _list_folder(split_dir)
    cache_file = None
    if cache_dir is not None:
        cache_file = cache_dir / f"{split_dir.name}-{_fingerprint(files, size)}.pt"
        if cache_file.exists():
            cached = torch.load(cache_file, weights_only=True)
            log.info("loaded %d cached images from %s", len(cached["labels"]), cache_file)
            return ImageSet(cached["images"], cached["labels"], classes, _source(split_dir))
    images = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = pool.map(lambda item: _decode(item[0], size), files, chunksize=256)
        for i, tensor in enumerate(
            tqdm(decoded, total=len(files), desc=f"decode {split_dir.name}", unit="img",
                 disable=not progress, leave=False)
        ):
            images[i] = tensor
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    if cache_file is not None:
        atomic_torch_save({"images": images, "labels": labels}, cache_file)
        log.info("cached %d decoded images in %s", len(labels), cache_file)
    return ImageSet(images, labels, classes, _source(split_dir))


def load_cifar10(data_dir: Path, train: bool, size: int, download: bool) -> ImageSet:
    """torchvision's CIFAR-10 under data_dir, downloaded when missing and online."""
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(data_dir), train=train, download=download)
    except Exception as exc:  # URLError, socket errors, corrupted archives, …
        raise DatasetError(
            f"CIFAR-10 is not under {data_dir} and could not be downloaded ({exc}). "
            "Offline? Put torchvision's cifar-10-batches-py folder under --data-dir, or use "
            "`--dataset folder --data-dir DIR` with DIR/train/<class>/*.png (and optionally "
            "DIR/test/<class>/*)"
        ) from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    if size != images.shape[-1]:
        images = torch.stack([image_to_uint8(Image.fromarray(a), size) for a in ds.data])
    labels = torch.tensor(ds.targets, dtype=torch.int64)
    return ImageSet(images, labels, list(CIFAR10_CLASSES), "torchvision CIFAR-10")


def load_dataset(
    name: str, data_dir: Path, size: int, *, cache_dir: Path | None, download: bool,
    progress: bool,
) -> tuple[ImageSet, ImageSet | None]:
    """The training images and, when the dataset has one, the test split."""
    if name == "cifar10":
        return (
            load_cifar10(data_dir, True, size, download),
            load_cifar10(data_dir, False, size, download),
        )
    if name != "folder":
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        raise DatasetError(
            f"{train_dir} does not exist: --dataset folder expects DIR/train/<class>/* "
            "(and optionally DIR/test/<class>/*)"
        )
    train = load_folder(train_dir, size, cache_dir, progress)
    test = None
    if (data_dir / "test").is_dir():
        test = load_folder(data_dir / "test", size, cache_dir, progress)
        if test.classes != train.classes:
            raise DatasetError(
                f"test classes {test.classes} differ from train classes {train.classes}"
            )
    return train, test


def stratified_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val): the same fraction of every class held out, reproducibly."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    gen = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for cls in labels.unique(sorted=True):
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = round(len(idx) * val_fraction)
        if n_val < 1 or n_val >= len(idx):
            raise DatasetError(
                f"class {int(cls)} has {len(idx)} images: too few to hold out "
                f"{val_fraction:.0%} for validation"
            )
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units, for normalisation."""
    means, stds = [], []
    for c in range(images.shape[1]):  # one channel at a time keeps memory small
        x = images[:, c].to(torch.float64).div_(255.0)
        means.append(round(float(x.mean()), 4))
        # A constant channel has std 0; 1/255 keeps the normalisation finite.
        stds.append(round(max(float(x.std()), 1 / 255), 4))
    return means, stds
