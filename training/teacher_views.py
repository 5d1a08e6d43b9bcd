"""The teacher's logits for K augmented views of every training image, computed once.

Online distillation runs the teacher on every batch of every epoch; on a CPU a ResNet-9 teacher
costs several times the tutorial CNN's whole training step. Here each training image gets K views
(crop offset and mirror, drawn once) and the teacher's logits for each; every epoch then replays
one of an image's K views at random, so the teacher passes over the data K times in all instead
of once per epoch. The student still sees exactly the view the teacher judged. Cached on disk,
keyed by the teacher file, the images, K, the augmentation, the seed and the precision.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from models.checkpoint import atomic_torch_save
from models.devices import autocast
from models.preprocess import normalize
from training.augment import crop_flip, draw_crop_flip

log = logging.getLogger(__name__)

CACHE_VERSION = 1
VIEW_SEED = 7_919  # added to the run's seed, so the views differ from every epoch's draws


@dataclass
class TeacherViews:
    """K stored views per image; row i of each tensor is image i of the whole set (held-out
    images keep zeros and are never drawn)."""

    dy: torch.Tensor  # int64 (K, N): crop row offset in the padded image
    dx: torch.Tensor  # int64 (K, N): crop column offset
    mirror: torch.Tensor  # bool (K, N)
    logits: torch.Tensor  # float32 (K, N, C): the teacher's logits for that view

    @property
    def k(self) -> int:
        return self.logits.shape[0]

    def draw(self, idx: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dy, dx, mirror, teacher logits) of one stored view per image of `idx` (CPU)."""
        which = torch.randint(0, self.k, (len(idx),), generator=generator)
        return (self.dy[which, idx], self.dx[which, idx], self.mirror[which, idx],
                self.logits[which, idx])


@torch.inference_mode()
def compute_views(
    teacher: nn.Module, images: torch.Tensor, indices: torch.Tensor, *, k: int, padding: int,
    flip: bool, seed: int, mean: list[float], std: list[float], device: torch.device,
    precision: str, channels_last: bool, progress: bool, batch_size: int = 500,
) -> TeacherViews:
    """Draw K views of each image in `indices` and run the teacher on them, in batches."""
    gen = torch.Generator().manual_seed(seed + VIEW_SEED)
    n = len(images)
    dy = torch.zeros(k, n, dtype=torch.int64)
    dx = torch.zeros(k, n, dtype=torch.int64)
    mirror = torch.zeros(k, n, dtype=torch.bool)
    logits: torch.Tensor | None = None
    bar = tqdm(total=k * len(indices), desc="teacher views", unit="img", leave=False,
               disable=not progress)
    for v in range(k):
        dy[v, indices], dx[v, indices], mirror[v, indices] = draw_crop_flip(
            len(indices), padding, flip, gen)
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            x = crop_flip(images[idx.to(images.device)], padding, dy[v, idx], dx[v, idx],
                          mirror[v, idx])
            x = normalize(x, mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out = teacher(x).float().cpu()
            if logits is None:
                logits = torch.zeros(k, n, out.shape[1])
            logits[v, idx] = out
            bar.update(len(idx))
        if not progress:
            log.info("teacher views: %d of %d done", v + 1, k)
    bar.close()
    assert logits is not None, "no training images"
    return TeacherViews(dy, dx, mirror, logits)


def cache_key(teacher_file: Path, images: torch.Tensor, indices: torch.Tensor, *, k: int,
              padding: int, flip: bool, seed: int, precision: str) -> str:
    """What the stored views depend on, hashed: a change to any of it computes them again."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} k={k} pad={padding} flip={flip} seed={seed} "
                            f"precision={precision}".encode())
    digest.update(Path(teacher_file).read_bytes())
    digest.update(indices.numpy().tobytes())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def load_or_compute_views(cache_dir: Path | None, key: str,
                          compute: Callable[[], TeacherViews], *, write: bool) -> TeacherViews:
    """The cached views for `key`, else `compute()`'s, written to the cache when `write`."""
    path = cache_dir / f"teacher-views-{key}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        log.info("loaded the teacher's views from %s", path)
        return TeacherViews(**torch.load(path, weights_only=True))
    views = compute()
    if path is not None and write:
        atomic_torch_save(vars(views), path)
        log.info("cached the teacher's views in %s (%.0f MB)", os.fspath(path),
                 path.stat().st_size / 2**20)
    return views
