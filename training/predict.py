"""Check a model on real photos: the top classes and their probabilities for each image.

    python -m training.predict dog.png cat.jpg --top-k 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from models import DEFAULT_CHECKPOINT
from models.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from models.images import ImageError
from models.inference import tta_logits
from models.preprocess import decode_to_uint8, normalize

MAX_PIXELS = 80_000_000


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.predict",
        description="Classify image files with a checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, WebP, …)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model to use")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    return p


@torch.inference_mode()
def classify(loaded: LoadedModel, data: bytes) -> torch.Tensor:
    """Image bytes → calibrated class probabilities, the same steps the service runs."""
    meta = loaded.meta
    x = normalize(decode_to_uint8(data, max_pixels=MAX_PIXELS, size=meta.input_size),
                  meta.mean, meta.std)
    logits = tta_logits(loaded.model, x.unsqueeze(0).to(loaded.device), meta.tta)
    logits = logits.float().cpu()[0]
    return torch.softmax(logits / meta.temperature, dim=0)


def main(args: argparse.Namespace) -> int:
    k = args.top_k
    loaded = load_checkpoint(args.checkpoint, args.device)
    classes = loaded.meta.classes
    if not 1 <= k <= len(classes):
        raise ValueError(f"--top-k must be between 1 and {len(classes)}")
    failures = 0
    for path in args.images:
        try:
            probs = classify(loaded, path.read_bytes())
        except (OSError, ImageError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        top = torch.topk(probs, k)
        ranked = [(classes[i], float(p)) for p, i in zip(top.values, top.indices, strict=True)]
        if args.json:
            print(json.dumps({"image": str(path), "class": ranked[0][0],
                              "top_k": [{"class": c, "probability": round(p, 4)}
                                        for c, p in ranked]}))
        else:
            print(f"{path}: " + ", ".join(f"{c} {p:.1%}" for c, p in ranked))
    return 1 if failures else 0


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return main(args)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
