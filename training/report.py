"""What a run leaves behind for people: confusion matrix (as fractions) and a JSON report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    flat = labels.to(torch.int64) * n + predicted.to(torch.int64)
    return torch.bincount(flat, minlength=n * n).view(n, n)


def row_fractions(counts: torch.Tensor) -> torch.Tensor:
    """Each row divided by its total: row i is where images of class i went."""
    totals = counts.sum(dim=1, keepdim=True).clamp(min=1)
    return counts.to(torch.float64) / totals


def confusion_figure(counts: torch.Tensor, classes: list[str], title: str):
    """A matplotlib Figure of the row-normalised confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fractions = row_fractions(counts).numpy()
    n = len(classes)
    size = max(5.0, 0.55 * n + 2)
    fig = Figure(figsize=(size, size * 0.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                value = fractions[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    return fig


def save_confusion_png(counts: torch.Tensor, classes: list[str], title: str, path: Path) -> None:
    fig = confusion_figure(counts, classes, title)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def per_class_accuracy(counts: torch.Tensor, classes: list[str]) -> dict[str, float]:
    fractions = row_fractions(counts)
    return {name: round(float(fractions[i, i]), 4) for i, name in enumerate(classes)}


def write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def save_curves_png(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and validation accuracy per epoch, for a glance without TensorBoard."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5), dpi=100, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend()
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], color="tab:green")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    acc_ax.grid(alpha=0.3)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
