"""Training throughput: our pipeline against the tutorial's own loop, same images, one run.

    python -m bench.train --data-dir ~/.cache/cifar10 --images 10000 --epochs 2

Tutorial loop: torchvision ImageFolder + ToTensor (every image decoded from its file by PIL
every epoch), DataLoader(batch_size=64, shuffle=True), SGD(lr=0.01), fp32, contiguous NCHW.
Ours: images decoded once into a uint8 tensor (the disk cache makes later runs skip even that),
batch augmentation on tensors, normalisation on the batch, channels_last, the precision
`--precision auto` picks, batch 128 — i.e. `training.engine` exactly as `training.run` uses it.
Both train the tutorial CNN from the same seed; images/s counts training images processed,
data loading included. Prints the two side by side and the ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from models.architectures import build_model
from training.data import channel_stats, default_cache_dir, load_folder
from training.engine import Batches, choose_precision, train_one_epoch
from training.resume import generator_for_epoch
from training.run import Recipe


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="folder with train/<class>/*")
    p.add_argument("--images", type=int, default=10000, help="training images per epoch")
    p.add_argument("--epochs", type=int, default=2, help="epochs timed for each pipeline")
    p.add_argument("--batch-size", type=int, default=128, help="our batch size")
    return p


def tutorial_loop(root: Path, indices: list[int], epochs: int) -> float:
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    dataset = Subset(datasets.ImageFolder(str(root), transform=transforms.ToTensor()), indices)
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    model = build_model("tutorial_cnn", 10)
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for imgs, targets in loader:
            loss = loss_fn(model(imgs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(targets)
    return seen / (time.perf_counter() - start)


def our_pipeline(
    root: Path, indices: torch.Tensor, epochs: int, batch_size: int
) -> tuple[float, float, str]:
    start = time.perf_counter()
    data = load_folder(root, 32, default_cache_dir(), progress=False)
    load_seconds = time.perf_counter() - start
    device = torch.device("cpu")
    precision = choose_precision(device, "auto")
    mean, std = channel_stats(data.images[indices])
    torch.manual_seed(0)
    model = build_model("tutorial_cnn", 10).to(memory_format=torch.channels_last)
    recipe = Recipe()
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=True, weight_decay=recipe.weight_decay)
    steps = len(indices) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr,
                                                    total_steps=epochs * steps)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    seen, start = 0, time.perf_counter()
    for epoch in range(epochs):
        batches = Batches(data.images, data.labels, indices, batch_size, mean, std,
                          recipe.crop_padding, True,
                          generator_for_epoch(0, epoch), True)
        train_one_epoch(model, batches, optimizer, scheduler, scaler, label_smoothing=0.0,
                        precision=precision, device=device, log_every=50,
                        on_log=lambda loss: None, progress=False, description="bench")
        seen += len(batches) * batch_size
    return seen / (time.perf_counter() - start), load_seconds, precision


def main(args: argparse.Namespace) -> None:
    root = args.data_dir / "train"
    n_files = sum(1 for _ in root.rglob("*.*"))
    gen = torch.Generator().manual_seed(0)
    indices = torch.randperm(n_files, generator=gen)[: args.images].sort().values
    print(f"{len(indices)} images × {args.epochs} epochs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    ours, load_s, precision = our_pipeline(root, indices, args.epochs, args.batch_size)
    tutorial = tutorial_loop(root, indices.tolist(), args.epochs)
    print(f"{'pipeline':<44}{'images/s':>10}")
    print(f"{'tutorial (ImageFolder+ToTensor, bs 64, fp32)':<44}{tutorial:>10,.0f}")
    print(f"{f'ours (in-memory uint8, bs {args.batch_size}, {precision}, CL)':<44}{ours:>10,.0f}")
    print(f"ratio ours / tutorial: {ours / tutorial:.2f}×   "
          f"(our one-time load of all {n_files} images: {load_s:.1f} s, cached on disk)")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
