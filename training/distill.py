"""Knowledge distillation (Hinton et al., 2015): a student learns from a frozen teacher.

The loss mixes cross-entropy on the labels with the KL divergence from the teacher's softened
distribution to the student's, both at temperature T; the KL term is scaled by T² so its
gradients keep their size as T changes. The teacher sees the student's own augmented batch.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import load_checkpoint


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """(1 − alpha)·CE(student, labels) + alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T))."""
    t = temperature
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    kl = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean", log_target=True,
    )
    return (1.0 - alpha) * ce + alpha * t * t * kl


class Teacher(nn.Module):
    """A checkpoint's network, frozen and always in eval mode, fed the student's batches.

    The student's batches are normalised with the student's mean and std; the teacher was
    trained with its own, so each batch is mapped back per channel (one multiply-add) first.
    """

    def __init__(self, model: nn.Module, student_mean: list[float], student_std: list[float],
                 teacher_mean: list[float], teacher_std: list[float]) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        s_mean, s_std = torch.tensor(student_mean), torch.tensor(student_std)
        t_mean, t_std = torch.tensor(teacher_mean), torch.tensor(teacher_std)
        # x_t = (x_s·std_s + mean_s − mean_t) / std_t
        self.register_buffer("scale", (s_std / t_std).view(1, 3, 1, 1))
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # BatchNorm statistics stay the teacher's

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)


def load_teacher(
    path: str | os.PathLike[str], device: torch.device, *, classes: list[str], input_size: int,
    mean: list[float], std: list[float], channels_last: bool,
    held_out: dict[str, Any] | None = None,
) -> Teacher:
    """The teacher of a run; refuses one whose classes or input size differ from the data's,
    or, given this run's `held_out` ({"split_seed", "val_fraction"}), one that held out other
    images: it has learnt this run's validation images, which would flatter the student.
    Raises models.checkpoint.CheckpointError for a file that cannot be loaded."""
    # BatchNorm folded: the teacher only ever runs in eval mode, and folded it is one op a layer.
    loaded = load_checkpoint(path, device=str(device), fold_bn=True)
    meta = loaded.meta
    if meta.classes != classes:
        raise ValueError(f"--teacher {os.fspath(path)}: its classes {meta.classes} differ from "
                         f"the data's {classes}")
    if meta.input_size != input_size:
        raise ValueError(f"--teacher {os.fspath(path)}: it takes {meta.input_size}px images, "
                         f"this run {input_size}px")
    if held_out is not None:
        theirs = {k: meta.data.get(k) for k in held_out}
        if theirs != held_out and all(v is not None for v in theirs.values()):
            raise ValueError(
                f"--teacher {os.fspath(path)}: it held out other images ({_describe(theirs)}; "
                f"this run {_describe(held_out)}), so it was trained on this run's validation "
                "images; train the teacher with the same --split-seed and --val-fraction")
    model = loaded.model
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Teacher(model, mean, std, meta.mean, meta.std).to(device)


def _describe(held_out: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in held_out.items())
