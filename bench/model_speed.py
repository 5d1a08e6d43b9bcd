"""The network alone: CPU ms per image at batch 1 and 32, ours against a tutorial-grade forward.

    python -m bench.model_speed            # tutorial_cnn, resnet9, whitened_vgg: random weights
    python -m bench.model_speed --checkpoint models/cifar10_whitened_vgg.pt --tta flip

Tutorial-grade: the checkpoint as loaded, NCHW tensors, `torch.no_grad()`, fp32, one view.
Ours: what the service runs — channels-last, BatchNorm folded, `torch.inference_mode()`, the
checkpoint's test-time augmentation (so flip does twice the work) — and the same in bf16
autocast where the CPU has native bf16. Each cell is the median of `--repeats` timed calls
after warm-up, with `--threads` intra-op threads (the service's default is 1 per worker).
Speed does not depend on the weights, so random ones stand in for unshipped models.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from models.architectures import build_model
from models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from models.classes import CIFAR10_CLASSES
from models.devices import autocast, cpu_has_fast_bf16, cpu_model
from models.inference import TTA_MODES, tta_logits

BATCHES = (1, 32)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.model_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, action="append", default=None,
                   help="checkpoint(s) to time (default: random tutorial_cnn, resnet9 and "
                   "whitened_vgg, each with its recipe's TTA)")
    p.add_argument("--tta", choices=TTA_MODES, default=None,
                   help="test-time augmentation to time (default: each checkpoint's own)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per cell")
    return p


def random_checkpoint(folder: Path, arch: str, tta: str) -> Path:
    torch.manual_seed(0)
    path = folder / f"random_{arch}.pt"
    meta = CheckpointMeta(arch=arch, classes=list(CIFAR10_CLASSES), input_size=32,
                          mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26], tta=tta)
    save_checkpoint(path, build_model(arch, 10), meta)
    return path


def median_ms(call: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def time_checkpoint(path: Path, repeats: int, bf16: bool,
                    tta: str | None = None) -> dict[str, list[float]]:
    """{variant: [ms per image at each batch size]}"""
    plain = load_checkpoint(path)
    served = load_checkpoint(path, fold_bn=True)
    served.model.to(memory_format=torch.channels_last)
    tta = tta or served.meta.tta
    rows: dict[str, list[float]] = {"tutorial-grade": [], f"ours (tta {tta})": []}
    if bf16:
        rows[f"ours bf16 (tta {tta})"] = []
    for n in BATCHES:
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        x_cl = x.contiguous(memory_format=torch.channels_last)

        def baseline(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                plain.model(x)

        def ours(x: torch.Tensor = x_cl, precision: str = "fp32") -> None:
            with torch.inference_mode(), autocast(served.device, precision):
                tta_logits(served.model, x, tta)

        rows["tutorial-grade"].append(median_ms(baseline, repeats) / n)
        rows[f"ours (tta {tta})"].append(median_ms(ours, repeats) / n)
        if bf16:
            rows[f"ours bf16 (tta {tta})"].append(
                median_ms(lambda: ours(precision="bf16"), repeats) / n)
    return rows


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    bf16 = cpu_has_fast_bf16()
    print(f"{cpu_model()}, torch {torch.__version__}, kernels "
          f"{torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s), native bf16: "
          f"{'yes' if bf16 else 'no'}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = args.checkpoint or [random_checkpoint(Path(tmp), "tutorial_cnn", "off"),
                                    random_checkpoint(Path(tmp), "resnet9", "flip"),
                                    random_checkpoint(Path(tmp), "whitened_vgg", "multicrop")]
        print(f"{'model':28} {'variant':24} " + " ".join(f"{f'batch {n} ms/img':>16}"
                                                         for n in BATCHES) + "   vs tutorial-grade")
        for path in paths:
            rows = time_checkpoint(Path(path), args.repeats, bf16, args.tta)
            base = rows["tutorial-grade"]
            for variant, cells in rows.items():
                ratio = " ".join(f"{b / c:5.2f}×" for b, c in zip(base, cells, strict=True))
                print(f"{Path(path).stem:28} {variant:24} "
                      + " ".join(f"{c:16.3f}" for c in cells) + f"   {ratio}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
