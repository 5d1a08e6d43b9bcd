"""Accuracy, per-class accuracy and the confusion matrix of a checkpoint on a dataset split.

    python -m training.evaluate --checkpoint models/cifar10_tutorial_cnn.pt \\
        --dataset folder --data-dir ~/.cache/cifar10 --split val
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from models.checkpoint import CheckpointError, load_checkpoint
from models.inference import TTA_MODES
from training.data import DATASETS, DatasetError, default_cache_dir, load_dataset, stratified_split
from training.engine import predict_logits
from training.report import confusion_matrix, per_class_accuracy, row_fractions, save_confusion_png

SPLITS = ("test", "val", "train")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a checkpoint on a dataset split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint to evaluate")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS, help="dataset kind")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where the data lives")
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="test: the dataset's test split; val: the images the checkpoint held "
                   "out for validation (same seed and fraction as its training); train: the rest")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--tta", default=None, choices=TTA_MODES,
                   help="test-time augmentation (default: the checkpoint's own, meta.tta)")
    p.add_argument("--confusion-png", type=Path, default=None, help="also draw the matrix here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                   help="where decoded images are cached between runs")
    return p


def main(args: argparse.Namespace) -> dict:
    loaded = load_checkpoint(args.checkpoint, args.device)
    meta = loaded.meta
    train, test = load_dataset(args.dataset, args.data_dir, meta.input_size,
                               cache_dir=args.cache_dir, download=True, progress=True)
    if train.classes != meta.classes:
        raise DatasetError(f"the dataset's classes {train.classes} differ from the "
                           f"checkpoint's {meta.classes}")
    if args.split == "test":
        if test is None:
            raise DatasetError(f"{args.data_dir} has no test split; try --split val")
        images, labels = test.images, test.labels
    else:
        fraction = float(meta.data.get("val_fraction", 0.1))
        seed = int(meta.data.get("split_seed", 0))
        train_idx, val_idx = stratified_split(train.labels, fraction, seed)
        idx = val_idx if args.split == "val" else train_idx
        images, labels = train.images[idx], train.labels[idx]
    tta = args.tta or meta.tta
    logits = predict_logits(loaded.model, images, mean=meta.mean, std=meta.std,
                            device=loaded.device, precision="fp32", channels_last=False,
                            tta=tta)
    counts = confusion_matrix(logits.argmax(1), labels, len(meta.classes))
    accuracy = float(counts.diag().sum() / counts.sum())
    if args.confusion_png is not None:
        save_confusion_png(counts, meta.classes,
                           f"{meta.arch} on {args.split}: {accuracy:.1%} accurate",
                           args.confusion_png)
    return {"split": args.split, "images": len(labels), "tta": tta,
            "accuracy": round(accuracy, 4),
            "per_class_accuracy": per_class_accuracy(counts, meta.classes),
            "confusion_matrix": counts.tolist(), "classes": meta.classes}


def format_table(result: dict) -> str:
    classes = result["classes"]
    fractions = row_fractions(torch.tensor(result["confusion_matrix"]))
    width = max(len(c) for c in classes)
    lines = [f"{result['split']}: {result['accuracy']:.2%} of {result['images']} images "
             f"(test-time augmentation: {result['tta']})",
             "", "per class (row = true class, columns = fraction predicted as each class):",
             " " * (width + 2) + " ".join(f"{c[:5]:>5}" for c in classes) + "   acc"]
    for i, name in enumerate(classes):
        row = " ".join(f"{float(v):5.2f}" for v in fractions[i])
        lines.append(f"{name:>{width}}  {row}  {result['per_class_accuracy'][name]:5.1%}")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        result = main(args)
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
