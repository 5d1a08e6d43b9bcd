"""One epoch of training and batched inference over in-memory uint8 images."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models.devices import autocast, cpu_has_fast_bf16
from models.inference import tta_logits
from models.preprocess import normalize
from training.augment import alternating_mirror, crop_flip, cutout, draw_crop_flip
from training.distill import distillation_loss
from training.distributed import World, shard
from training.teacher_views import TeacherViews

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing is saved from such a run."""


def choose_precision(device: torch.device, requested: str) -> str:
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of: {', '.join(PRECISIONS)}")
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise ValueError("fp16 autocast is for GPUs; on CPU use bf16 or fp32")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


@dataclass
class Batches:
    """Augmented, normalised batches of one epoch, in an order fixed by `generator`, each
    with the teacher's logits when `views` holds them (else None)."""

    images: torch.Tensor  # uint8 (N, 3, S, S), on the training device
    labels: torch.Tensor
    indices: torch.Tensor  # the whole training set; each rank takes its share per epoch
    batch_size: int
    mean: list[float]
    std: list[float]
    padding: int
    flip: bool
    generator: torch.Generator
    channels_last: bool
    world: World = World()
    views: TeacherViews | None = None
    flip_mode: str = "random"  # or "alternate": training.augment.alternating_mirror
    reflect: bool = False  # pad crops with the image's reflection instead of zeros
    epoch: int = 0  # for alternating flips
    seed: int = 0  # fixes each image's first-epoch flip under "alternate"
    cutout: int = 0  # side of the square blanked in each image (0: none)

    def __len__(self) -> int:
        # Equal shares for every rank; the ragged last batch is dropped.
        return len(self.indices) // self.world.size // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        # Every rank draws the same permutation (same generator seed), then takes its share.
        order = self.indices[torch.randperm(len(self.indices), generator=self.generator)]
        order = shard(order, self.world)
        device = self.images.device
        alternate = self.flip and self.flip_mode == "alternate"
        mirrors = alternating_mirror(len(self.images), self.epoch, self.seed) if alternate \
            else None
        for b in range(len(self)):
            cpu_idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            idx = cpu_idx.to(device)
            x = self.images[idx]
            taught = None
            if self.views is not None:  # replay a view the teacher has judged
                dy, dx, mirror, taught = self.views.draw(cpu_idx, self.generator)
                x = crop_flip(x, self.padding, dy, dx, mirror)
                taught = taught.to(device)
            elif self.padding or self.flip:
                dy, dx, mirror = draw_crop_flip(len(cpu_idx), self.padding,
                                                self.flip and not alternate, self.generator)
                if mirrors is not None:
                    mirror = mirrors[cpu_idx]
                x = crop_flip(x, self.padding, dy, dx, mirror, reflect=self.reflect)
            x = normalize(x, self.mean, self.std)
            if self.cutout:
                x = cutout(x, self.cutout, self.generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx], taught


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    *,
    label_smoothing: float,
    precision: str,
    device: torch.device,
    log_every: int,
    on_log: Callable[[float], None],
    progress: bool,
    description: str,
    teacher: nn.Module | None = None,
    distill_alpha: float = 0.0,
    distill_temperature: float = 1.0,
    on_step: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """The tutorial's loop (zero_grad / forward / loss / backward / step) over one epoch.

    With a `teacher`, or teacher logits in the batches, the loss is training.distill's mix of
    cross-entropy and KL to the teacher's softened logits on the same batch.
    Returns (mean training loss, images per second). `on_log` receives the mean loss of the
    last `log_every` steps; `on_step` runs after every optimizer and scheduler step.
    Raises TrainingDiverged on a non-finite loss.
    """
    model.train()
    running = torch.zeros((), device=device)
    total, window, steps = 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(batches, desc=description, unit="batch", leave=False, disable=not progress)
    for x, y, taught in bar:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(x)
            if taught is None and teacher is not None:
                taught = teacher(x)
            if taught is None:
                loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            else:
                loss = distillation_loss(logits, taught, y, alpha=distill_alpha,
                                         temperature=distill_temperature,
                                         label_smoothing=label_smoothing)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if on_step is not None:
            on_step()
        running += loss.detach().float()
        window += 1
        steps += 1
        if window == log_every or steps == len(batches):
            mean_loss = float(running) / window  # one device sync per window, not per step
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(
                    f"the training loss became {mean_loss} at step {steps} of {description}; "
                    "lower --lr, or check the data. Nothing was saved from this epoch."
                )
            on_log(mean_loss)
            total += mean_loss * window
            running.zero_()
            window = 0
            rate = steps * batches.batch_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{mean_loss:.3f}", img_s=f"{rate:,.0f}")
    elapsed = time.perf_counter() - start
    return total / max(steps, 1), steps * batches.batch_size / max(elapsed, 1e-9)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    mean: list[float],
    std: list[float],
    device: torch.device,
    precision: str,
    channels_last: bool,
    tta: str = "off",
    batch_size: int = 1000,
) -> torch.Tensor:
    """float32 logits on the CPU for uint8 images, in order; `tta` as in models.inference."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size].to(device), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out.append(tta_logits(model, x, tta).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
