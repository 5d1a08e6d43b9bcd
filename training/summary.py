"""The end of a run: calibrate on validation, evaluate the test split once, write reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import CheckpointMeta
from models.inference import TTA_MODES
from training.calibration import expected_calibration_error, fit_temperature
from training.engine import predict_logits
from training.report import (
    confusion_matrix,
    per_class_accuracy,
    save_confusion_png,
    save_curves_png,
    write_json,
)


def report_paths(output: Path) -> dict[str, Path]:
    """Files written beside a checkpoint `x.pt`."""
    return {
        "report": output.with_name(output.stem + ".report.json"),
        "confusion": output.with_name(output.stem + ".confusion.png"),
        "curves": output.with_name(output.stem + ".curves.png"),
    }


def split_metrics(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> dict[str, float]:
    probs = F.softmax(logits / temperature, dim=1)
    return {
        "accuracy": float((logits.argmax(1) == labels).float().mean()),
        "nll": float(F.cross_entropy(logits / temperature, labels)),
        "ece": expected_calibration_error(probs, labels),
    }


def finish_run(
    model: nn.Module,
    meta: CheckpointMeta,
    writer: Any,
    *,
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None,
    history: list[dict[str, Any]],
    eval_kw: dict[str, Any],
    output: Path,
    global_step: int,
) -> dict[str, Any]:
    """Fill meta.temperature and meta.metrics, write the report files; return a summary.

    Everything is measured with the checkpoint's test-time augmentation (meta.tta), the way
    it will be served; with TTA on, the accuracy without it is recorded too, for its gain."""
    eval_kw = {**eval_kw, "tta": meta.tta}
    val_logits = predict_logits(model, val[0], **eval_kw)
    val_labels = val[1]
    temperature = fit_temperature(val_logits, val_labels)
    before = split_metrics(val_logits, val_labels, 1.0)
    after = split_metrics(val_logits, val_labels, temperature)
    meta.temperature = round(temperature, 4)
    meta.metrics = {
        "val_accuracy": round(before["accuracy"], 4),
        "val_nll": round(before["nll"], 4),
        "val_nll_calibrated": round(after["nll"], 4),
        "val_ece": round(before["ece"], 4),
        "val_ece_calibrated": round(after["ece"], 4),
    }
    # The accuracy under every other TTA mode too: what serving more or fewer views would buy.
    for mode in TTA_MODES:
        if mode != meta.tta:
            other = predict_logits(model, val[0], **{**eval_kw, "tta": mode})
            key = "val_accuracy_no_tta" if mode == "off" else f"val_accuracy_tta_{mode}"
            meta.metrics[key] = round(float((other.argmax(1) == val_labels).float().mean()), 4)
    n = len(meta.classes)
    val_counts = confusion_matrix(val_logits.argmax(1), val_labels, n)
    report: dict[str, Any] = {
        "meta": None,  # filled below, once metrics are final
        "validation": {
            **meta.metrics,
            "per_class_accuracy": per_class_accuracy(val_counts, meta.classes),
            "confusion_matrix": val_counts.tolist(),
        },
        "history": history,
    }
    final_split, final_counts = "validation", val_counts
    if test is not None:
        # The test split is looked at exactly once, here, with the weights already chosen.
        test_logits = predict_logits(model, test[0], **eval_kw)
        test_metrics = split_metrics(test_logits, test[1], temperature)
        meta.metrics["test_accuracy"] = round(test_metrics["accuracy"], 4)
        meta.metrics["test_ece_calibrated"] = round(test_metrics["ece"], 4)
        final_counts = confusion_matrix(test_logits.argmax(1), test[1], n)
        final_split = "test"
        report["test"] = {
            "accuracy": meta.metrics["test_accuracy"],
            "ece_calibrated": meta.metrics["test_ece_calibrated"],
            "per_class_accuracy": per_class_accuracy(final_counts, meta.classes),
            "confusion_matrix": final_counts.tolist(),
        }
    report["meta"] = meta.to_dict()

    paths = report_paths(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    title = (f"{meta.arch} on the {final_split} split: "
             f"{float(final_counts.diag().sum() / final_counts.sum()):.1%} accurate")
    save_confusion_png(final_counts, meta.classes, title, paths["confusion"])
    save_curves_png(history, paths["curves"])
    write_json(report, paths["report"])

    if writer is not None:
        from training.report import confusion_figure

        writer.add_figure(f"confusion/{final_split}",
                          confusion_figure(final_counts, meta.classes, title), global_step)
        writer.add_scalar("val/ece", before["ece"], global_step)
        writer.add_scalar("val/ece_calibrated", after["ece"], global_step)
        if "test_accuracy" in meta.metrics:
            writer.add_scalar("test/accuracy", meta.metrics["test_accuracy"], global_step)
        writer.flush()

    m = meta.metrics
    lines = [
        f"best epoch {meta.training.get('best_epoch')} of {meta.epochs}: validation accuracy "
        f"{m['val_accuracy']:.2%} ({meta.data.get('val_images')} images"
        + (f", {meta.tta} TTA; {m['val_accuracy_no_tta']:.2%} without" if meta.tta != "off"
           else "") + ")",
        f"temperature {meta.temperature:.3f}: validation ECE {m['val_ece']:.4f} → "
        f"{m['val_ece_calibrated']:.4f}, NLL {m['val_nll']:.4f} → {m['val_nll_calibrated']:.4f}",
    ]
    if "test_accuracy" in m:
        lines.append(f"test accuracy {m['test_accuracy']:.2%} (evaluated once)")
    lines.append(f"train time {meta.training.get('train_seconds')} s on "
                 f"{meta.training.get('device')} ({meta.training.get('precision')})")
    lines.append(f"wrote {output}, {paths['report'].name}, {paths['confusion'].name}, "
                 f"{paths['curves'].name}")
    return {"metrics": dict(m), "temperature": meta.temperature, "lines": lines,
            "files": {k: str(v) for k, v in paths.items()}}
