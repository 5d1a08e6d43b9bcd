"""Train an image classifier and write a checkpoint the service can load.

    python -m training.run --dataset folder --data-dir ~/.cache/cifar10 \\
        --output models/cifar10_tutorial_cnn.pt

Default recipe, tutorial CNN unchanged, on the 50,000 CIFAR-10 training images (45,000 train /
5,000 validation): 76.7% validation accuracy at epoch 29 of 30 (the tutorial's own 30-epoch
recipe: 61% on the test split), temperature 1.096, 2,534 s of training on 1 thread of a shared
2-core AMD EPYC (AVX2, so fp32 + channels_last), torch 2.14.1.

The shipped models/cifar10_tutorial_cnn.pt is that recipe distilled from the whitened VGG below
(`--teacher models/cifar10_whitened_vgg.pt --teacher-views 8 --epochs 150 --patience 0
--train-batchnorm on --lr 0.1`): 79.34% validation accuracy (80.08% with flip TTA), temperature
0.474, 11 min of teacher views then 2,234 s of training on both cores of the bf16 VM below.

`--arch whitened_vgg` (airbench's recipe with Muon for the convs, in RECIPES): 91.80%
validation accuracy with flip TTA (91.56% without, 91.82% with multicrop) after its 12 epochs,
temperature 0.496, 3,089 s of training on both cores of a 2-core AMD EPYC with AVX512-BF16
(bf16 autocast), torch 2.14.1: the shipped models/cifar10_whitened_vgg.pt. `--arch resnet9`:
90.64% with flip TTA after its 16 epochs, 7,600 s on the same kind of VM (no longer shipped).

The run reads top to bottom: data, network, optimiser, loop (with validation each epoch and a
resumable state after each), then calibration, the one test evaluation, reports, checkpoint.
Under `torchrun --nproc_per_node N` the same file runs DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# The train extra, which the serving image leaves out: one line instead of a traceback.
if not all(importlib.util.find_spec(name) for name in ("tqdm", "tensorboard", "matplotlib")):
    sys.exit("training needs tqdm, tensorboard and matplotlib: pip install '.[train]'")

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm, trange

from models.architectures import (
    ARCHITECTURES,
    build_model,
    get_architecture,
    load_pretrained_backbone,
)
from models.checkpoint import CheckpointError, CheckpointMeta, save_checkpoint, without_paths
from models.devices import cpu_flags, cpu_model, resolve_device
from models.inference import TTA_MODES
from models.preprocess import normalize
from training.batchnorm_fold import fold_into, with_batchnorm
from training.data import (
    DATASETS,
    DatasetError,
    channel_stats,
    default_cache_dir,
    load_dataset,
    stratified_split,
)
from training.distill import load_teacher
from training.distributed import World, barrier, device_for, init_world, shutdown
from training.engine import (
    PRECISIONS,
    Batches,
    TrainingDiverged,
    choose_precision,
    predict_logits,
    train_one_epoch,
)
from training.lookahead import Lookahead
from training.muon import MuonSGD
from training.resume import ResumeError, generator_for_epoch, load_state, save_state, state_path_for
from training.summary import finish_run
from training.teacher_views import TeacherViews, cache_key, compute_views, load_or_compute_views
from training.whitening import fit_whitening

log = logging.getLogger("training.run")

# ImageNet statistics, for torchvision's pretrained VGG16.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class Recipe:
    """One architecture's default hyper-parameters, with why. Every one is a flag of the same
    name; a flag given on the command line wins over the recipe."""

    epochs: int = 30  # one-cycle over 30 epochs; see the module docstring for what it reaches
    batch_size: int = 128  # images per step (per process under torchrun)
    # Peak learning rate of the schedule (SGD). 0.05 made this network (no normalisation
    # layers) diverge to NaN at epoch 10; 0.02 is stable. AdamW wants ~0.003.
    lr: float = 0.02
    optimizer: str = "sgd"  # SGD with Nesterov momentum
    muon_lr: float = 0.24  # --optimizer muon: the conv filters' learning rate (airbench94_muon)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # L2 on weights, per step
    schedule: str = "onecycle"
    label_smoothing: float = 0.0  # 0 = plain cross-entropy; temperature scaling calibrates after
    # Random crops of the image padded by this many pixels. This small network underfits:
    # padding 2 reached 76.7% where 4 reached 75.1% (same recipe otherwise, 30 epochs).
    crop_padding: int = 2
    patience: int = 10  # epochs without a better validation accuracy before stopping
    tta: str = "off"  # test-time augmentation recorded in the checkpoint (models.inference)
    # Learning-rate multiplier of BatchNorm biases and a whitening stem's bias; their weight
    # decay is divided by it, so only their step size grows (airbench: 64).
    bias_lr_scale: float = 1.0
    whiten_bias_epochs: int = 0  # a whitening stem's bias trains this many epochs, then freezes
    lookahead_every: int = 0  # steps between lookahead pulls (training.lookahead); 0: none
    flip_mode: str = "random"  # a coin per image per epoch, or "alternate" (training.augment)
    pad_mode: str = "zeros"  # crop padding: zeros or the image's reflection
    cutout: int = 0  # side of a square blanked at random in each training image; 0: none
    # "on": train with a BatchNorm after each layer, folded away before the checkpoint is
    # written (training.batchnorm_fold), for the networks that have none. Distilling the
    # tutorial CNN for 15 epochs it took 73.4% to 76.1% (with lr 0.1); alone, nothing.
    train_batchnorm: str = "off"


RECIPES: dict[str, Recipe] = {
    "tutorial_cnn": Recipe(),
    "vgg16": Recipe(),
    # The DAWNBench ResNet-9 recipe (Page, 2018): batch 512, peak LR 0.4 with Nesterov SGD,
    # weight decay 5e-4, crops padded by 4, label smoothing 0.2; BatchNorm lets the LR be
    # 20× the tutorial CNN's. One-cycle to the last epoch, so no early stop. Flip TTA at
    # evaluation. See docs/gpu.md for the runs behind it.
    "resnet9": Recipe(epochs=16, batch_size=512, lr=0.4, label_smoothing=0.2, crop_padding=4,
                      patience=0, tta="flip"),
    # airbench's recipe (Jordan, arXiv 2404.00498), from the paper's methods. Its decoupled
    # hyper-parameters (lr 10 and decay 0.0153 per 1,024 images, summed loss, Nesterov 0.85)
    # in PyTorch's terms for a mean loss: lr = 10 / (1 + 1/(1 − 0.85)) = 1.30, and, since SGD
    # multiplies decay by lr, weight_decay = 0.0153 / 7.67 / 1.30 = 1.53e-3. Triangular
    # schedule 0.2 → 1 (23% of steps) → 0.07; whitening bias frozen after 3 epochs. 12
    # epochs fit the CPU hour. Served with flip: multicrop's six views scored the same
    # (91.56% vs 91.54%) at three times the cost. Muon steps the conv filters (airbench94_muon's
    # lr 0.24): 91.80% against SGD's 91.50% for the same seed and 12 epochs (docs/training.md).
    "whitened_vgg": Recipe(epochs=12, batch_size=1024, lr=1.30, momentum=0.85, optimizer="muon",
                           weight_decay=1.53e-3, schedule="triangle", label_smoothing=0.2,
                           crop_padding=2, patience=0, tta="flip", bias_lr_scale=64.0,
                           whiten_bias_epochs=3, lookahead_every=5, flip_mode="alternate",
                           pad_mode="reflect"),
    # airbench96's layout and augmentation (three convs and a skip per block, widths
    # 128/512/512, 4-pixel translation, 12-pixel cutout, lr 9 and decay 0.012 per 1,024
    # images, 40 epochs): 96.05% on lossless CIFAR-10 in 46 s of an A100, 7.5 PFLOPs. About
    # five times the CPU hour of whitened_vgg; scripts/gpu-check.sh runs it on a GPU.
    "whitened_resvgg": Recipe(epochs=40, batch_size=1024, lr=1.17, momentum=0.85,
                              weight_decay=1.33e-3, schedule="triangle", label_smoothing=0.2,
                              crop_padding=4, patience=0, tta="multicrop", bias_lr_scale=64.0,
                              whiten_bias_epochs=3, lookahead_every=5, flip_mode="alternate",
                              pad_mode="reflect", cutout=12),
}
# The whitened VGG at airbench94's widths (64/256/256) and hyper-parameters (lr 11.5, decay
# 0.0153 per 1,024 images, 9.9 epochs), with Muon as above (90.94% against SGD's 90.24%): a
# quarter of the hour, for comparing ingredients and for a faster model.
RECIPES["whitened_vgg_small"] = replace(RECIPES["whitened_vgg"], epochs=10, lr=1.50,
                                        weight_decay=1.33e-3)
RECIPE_FIELDS = tuple(Recipe.__dataclass_fields__)
COMPILE_MODES = ("auto", "on", "off")
OPTIMIZERS = ("sgd", "adamw", "muon")
SCHEDULES = ("onecycle", "cosine", "triangle")
FLIP_MODES = ("random", "alternate")
PAD_MODES = ("zeros", "reflect")
ON_OFF = ("off", "on")
NORM_FREE = ("tutorial_cnn", "vgg16")  # the architectures --train-batchnorm applies to
VAL_FRACTION = 0.1  # held out from the training images, stratified
WHITEN_IMAGES = 5000  # training images a whitening stem is fitted on
LOG_EVERY = 50  # steps between training-loss points in TensorBoard


def _recipe_help(name: str) -> str:
    """'tutorial_cnn 0.02, resnet9 0.4': a recipe field's default per architecture."""
    return ", ".join(f"{arch} {getattr(r, name)}" for arch, r in RECIPES.items())


def apply_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every recipe flag the user left unset from the architecture's recipe."""
    recipe = RECIPES.get(args.arch, Recipe())
    for name in RECIPE_FIELDS:
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(recipe, name))
    return args


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.run",
        description="Train an image classifier; writes a checkpoint, a JSON report, a "
        "confusion-matrix PNG and TensorBoard curves.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="cifar10", choices=DATASETS,
                   help="cifar10: torchvision's CIFAR-10 under --data-dir (downloaded if online); "
                   "folder: --data-dir/train/<class>/* and optional --data-dir/test/<class>/*")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where the data lives")
    p.add_argument("--arch", default="tutorial_cnn", choices=sorted(ARCHITECTURES),
                   help="network architecture")
    p.add_argument("--input-size", type=int, default=None,
                   help="image side in pixels (default: the architecture's)")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="local file of ImageNet weights for vgg16 (torchvision's state_dict)")
    recipe_flags = [  # (flag, type, choices, help); defaults come from the arch's recipe
        ("epochs", int, None, "maximum epochs"),
        ("batch-size", int, None, "images per step"),
        ("lr", float, None, "peak learning rate"),
        ("optimizer", str, OPTIMIZERS, "SGD with Nesterov momentum, AdamW, or muon: Muon "
         "for the conv filters and Nesterov SGD for the rest (training.muon)"),
        ("muon-lr", float, None, "learning rate of the conv filters under --optimizer muon "
         "(each filter tensor is kept at norm √out-channels, so this is a rate of rotation)"),
        ("momentum", float, None, "SGD momentum"),
        ("weight-decay", float, None, "weight decay"),
        ("schedule", str, SCHEDULES, "learning-rate schedule, stepped every batch (triangle: "
         "0.2 → 1 at 23%% of the steps → 0.07 of --lr)"),
        ("label-smoothing", float, None, "cross-entropy label smoothing"),
        ("crop-padding", int, None, "random-crop padding in pixels (0 disables cropping)"),
        ("patience", int, None, "stop after this many epochs without a better validation "
         "accuracy (0: never stop early)"),
        ("tta", str, TTA_MODES, "test-time augmentation, recorded in the checkpoint and used "
         "by evaluate, predict and the service: off, flip (mean of the image's and its "
         "mirror's logits) or multicrop (flip × three one-pixel shifts, six views)"),
        ("bias-lr-scale", float, None, "learning-rate multiplier of BatchNorm biases and a "
         "whitening stem's bias (their weight decay is divided by it)"),
        ("whiten-bias-epochs", int, None, "epochs a whitening stem's bias trains before it "
         "freezes (0: all of them)"),
        ("lookahead-every", int, None, "steps between pulls toward a slow copy of the "
         "weights, which the network becomes at the end (0: off)"),
        ("flip-mode", str, FLIP_MODES, "random: a coin per image per epoch; alternate: each "
         "image mirrored in every other epoch"),
        ("pad-mode", str, PAD_MODES, "what fills the crop padding: zeros, or the image's "
         "reflection"),
        ("cutout", int, None, "side in pixels of a square blanked at random in each training "
         "image (0: none)"),
        ("train-batchnorm", str, ON_OFF, "train with a BatchNorm after each conv and linear "
         "layer but the last, folded into them before saving: the checkpoint is the plain "
         f"network ({', '.join(NORM_FREE)} only)"),
    ]
    for flag, kind, choices, text in recipe_flags:
        # SUPPRESS: an unset flag stays absent (no "default: None" in the help) until
        # apply_recipe fills it in.
        p.add_argument(f"--{flag}", type=kind, default=argparse.SUPPRESS, choices=choices,
                       help=f"{text} (default per --arch: {_recipe_help(flag.replace('-', '_'))})")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="disable random horizontal flips")
    p.add_argument("--teacher", type=Path, default=None,
                   help="checkpoint of a stronger network to distil from (same classes); "
                   "it runs frozen, in eval mode, on every training batch")
    p.add_argument("--distill-alpha", type=float, default=0.9,
                   help="weight of the teacher's KL term; 1 − alpha goes to the labels")
    p.add_argument("--distill-temperature", type=float, default=4.0,
                   help="softmax temperature of both networks in the KL term")
    p.add_argument("--teacher-views", type=int, default=0,
                   help="0: the teacher runs on every batch. K > 0: it judges K augmented views "
                   "of each image once (cached), and every epoch replays one of them; K passes "
                   "of the teacher in all, for CPUs where it costs more than the student")
    p.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                   help="fraction of the training images held out for validation")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, init and data order")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the train/validation split alone (default: --seed); runs that "
                   "differ only in --seed then hold out the same images, so their accuracies "
                   "compare and one can teach another's student")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if present, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16/fp16 autocast on CUDA, bf16 on CPUs with native bf16, "
                   "else fp32")
    p.add_argument("--compile", default="auto", choices=COMPILE_MODES,
                   help="torch.compile the training step: auto = on CUDA when a compiler "
                   "(Triton) is installed, eager elsewhere; results are the same either way")
    p.add_argument("--save-dtype", default="float32", choices=("float32", "float16"),
                   help="dtype of the weights in the checkpoint file; float16 halves it and "
                   "loads back into float32")
    p.add_argument("--output", type=Path, default=None,
                   help="checkpoint path (default: checkpoints/<dataset>_<arch>.pt); the JSON "
                   "report, PNGs and the resumable NAME.state.pt are written beside it")
    p.add_argument("--logdir", type=Path, default=None,
                   help="TensorBoard folder (default: runs/<dataset>_<arch>_<time>)")
    p.add_argument("--log-every", type=int, default=LOG_EVERY,
                   help="steps between training-loss points")
    p.add_argument("--resume", type=Path, default=None,
                   help="continue an interrupted run from its NAME.state.pt; its own settings "
                   "are used, except --device, --stop-after, --no-progress and, when given, "
                   "--tta (resuming a finished run with --tta recalibrates it for that TTA)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="end this invocation after N more epochs, leaving a resumable state "
                   "(for time-boxed runs)")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                   help="where decoded images are cached between runs")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="decode the images again instead of using or writing the cache")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never try to download CIFAR-10")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (for logs)")
    return p


# Flags that may differ when resuming; everything else comes from the interrupted run.
RESUME_OVERRIDES = ("device", "stop_after", "progress", "resume")
# Given with --resume, these win too: they only change what the end of the run measures and
# records, so a finished run can be resumed to calibrate it for another served TTA.
RESUME_OPTIONAL_OVERRIDES = ("tta",)


def _validate(args: argparse.Namespace) -> None:
    apply_recipe(args)
    for name in ("epochs", "batch_size", "log_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0:
        raise ValueError("--lr must be positive")
    if args.muon_lr <= 0:
        raise ValueError("--muon-lr must be positive")
    if args.bias_lr_scale <= 0:
        raise ValueError("--bias-lr-scale must be positive")
    for name in ("whiten_bias_epochs", "lookahead_every", "cutout"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more")
    if not 0.0 <= args.distill_alpha <= 1.0:
        raise ValueError("--distill-alpha must be between 0 and 1")
    if args.distill_temperature <= 0:
        raise ValueError("--distill-temperature must be positive")
    if args.teacher_views < 0:
        raise ValueError("--teacher-views must be 0 (online) or a number of views")
    if args.teacher_views and args.teacher is None:
        raise ValueError("--teacher-views needs --teacher")
    if args.train_batchnorm == "on" and args.arch not in NORM_FREE:
        raise ValueError(f"--train-batchnorm on is for {' and '.join(NORM_FREE)}; {args.arch} "
                         "has its own normalisation")
    arch = get_architecture(args.arch)
    if args.input_size is None:
        args.input_size = arch.default_input_size
    if arch.fixed_input_size and args.input_size != arch.default_input_size:
        raise ValueError(f"{args.arch} only takes --input-size {arch.default_input_size}")
    if args.cutout > args.input_size:
        raise ValueError(f"--cutout {args.cutout} is larger than the {args.input_size}px images")
    if args.output is None:
        args.output = Path("checkpoints") / f"{args.dataset}_{args.arch}.pt"
    if args.logdir is None:
        args.logdir = Path("runs") / f"{args.dataset}_{args.arch}_{time.strftime('%Y%m%d-%H%M%S')}"


def _args_to_dict(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def _restore_args(args: argparse.Namespace, saved: dict[str, Any]) -> argparse.Namespace:
    # Parser defaults first: a state written before a flag existed still resumes.
    merged = {**vars(get_args_parser().parse_args([])), **saved}
    for key in RESUME_OVERRIDES:
        merged[key] = getattr(args, key)
    for key in RESUME_OPTIONAL_OVERRIDES:
        if hasattr(args, key):
            merged[key] = getattr(args, key)
    for key in ("data_dir", "output", "logdir", "cache_dir", "pretrained", "teacher"):
        if merged.get(key) is not None:
            merged[key] = Path(merged[key])
    return argparse.Namespace(**merged)


def use_compile(mode: str, device: torch.device) -> bool:
    """Whether to torch.compile: `auto` only where it pays and works without setup, a CUDA
    device with Triton; on CPU it needs a C++ toolchain and saved little for convolutions."""
    if mode != "auto":
        return mode == "on"
    if device.type != "cuda":
        return False
    return importlib.util.find_spec("triton") is not None


def _param_groups(model: torch.nn.Module, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One group of everything that trains, or, with --bias-lr-scale or a whitening stem,
    the stem's bias, the BatchNorm biases and the rest apart (frozen weights left out)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    whiten = getattr(model, "whiten", None)
    stem = [whiten.bias] if isinstance(whiten, torch.nn.Conv2d) and whiten.bias is not None \
        else []
    if args.bias_lr_scale == 1.0 and not stem:
        return [{"params": trained, "name": "all"}]
    scale = args.bias_lr_scale
    biases = {id(m.bias) for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    special = biases | {id(p) for p in stem}
    fast = {"lr": args.lr * scale, "weight_decay": args.weight_decay / scale}
    groups = [{"params": stem, "name": "whiten_bias", **fast}] if stem else []
    groups.append({"params": [p for p in trained if id(p) in biases], "name": "norm_biases",
                   **fast})
    groups.append({"params": [p for p in trained if id(p) not in special], "name": "weights"})
    return [g for g in groups if g["params"]]


def _muon_groups(groups: list[dict[str, Any]], muon_lr: float) -> list[dict[str, Any]]:
    """`groups` with every conv filter (4-D weight) moved into a first group that Muon steps."""
    filters = [p for g in groups for p in g["params"] if p.ndim == 4]
    kept = [{**g, "params": [p for p in g["params"] if p.ndim != 4]} for g in groups]
    muon = {"params": filters, "name": "filters", "lr": muon_lr, "muon": True}
    # First, so that param_groups[-1] stays the plain weights whose lr the history records.
    return ([muon] if filters else []) + [g for g in kept if g["params"]]


def _make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    groups = _param_groups(model, args)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "muon":
        return MuonSGD(_muon_groups(groups, args.muon_lr), lr=args.lr, momentum=args.momentum,
                       weight_decay=args.weight_decay)
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum,
                           nesterov=args.momentum > 0, weight_decay=args.weight_decay)


def triangle(step: int, total: int, start: float = 0.2, peak_at: float = 0.23,
             end: float = 0.07) -> float:
    """The triangular schedule's multiplier at `step` of `total`: linear from `start` up to 1
    at `peak_at` of the steps, then linear down to `end`."""
    peak = max(1, int(peak_at * total))
    if step <= peak:
        return start + (1.0 - start) * step / peak
    return 1.0 + (end - 1.0) * min(step - peak, total - peak) / max(1, total - peak)


def _make_scheduler(opt: torch.optim.Optimizer, args: argparse.Namespace, steps_per_epoch: int):
    total = args.epochs * steps_per_epoch
    if args.schedule == "triangle":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: triangle(step, total))
    if args.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if total < 3:  # too short for a warm-up and an annealing phase: constant LR
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        # 25% warm-up, but at least 2 steps of it (OneCycleLR divides by the warm-up length).
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
        pct_start=max(0.25, 2 / total), anneal_strategy="linear", div_factor=10.0,
        final_div_factor=100.0,
    )


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) one training; returns the summary rank 0 prints."""
    state: dict[str, Any] | None = None
    if args.resume is not None:
        state = load_state(args.resume)
        args = _restore_args(args, state["args"])
    _validate(args)
    world = init_world(args.device)
    try:
        return _train(args, world, state)
    finally:
        shutdown(world)


def _train(args: argparse.Namespace, world: World, state: dict[str, Any] | None) -> dict[str, Any]:
    device = device_for(world, resolve_device(args.device))
    precision = choose_precision(device, args.precision)
    channels_last = device.type in ("cpu", "cuda")
    progress = args.progress and world.is_main
    torch.manual_seed(args.seed)

    # --- data: decoded once into uint8 tensors, validation held out per class -------------
    train_all, test = load_dataset(
        args.dataset, args.data_dir, args.input_size,
        cache_dir=args.cache_dir if args.cache else None,
        download=args.download, progress=progress,
    )
    split_seed = args.seed if args.split_seed is None else args.split_seed
    train_idx, val_idx = stratified_split(train_all.labels, args.val_fraction, split_seed)
    if state is not None:
        mean, std = state["mean"], state["std"]
    elif args.pretrained is not None:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = channel_stats(train_all.images[train_idx])
    classes = train_all.classes
    images = train_all.images.to(device)
    labels = train_all.labels.to(device)

    # --- network -------------------------------------------------------------------------
    model = build_model(args.arch, len(classes))
    if args.pretrained is not None and state is None:
        fresh = load_pretrained_backbone(model, args.arch, args.pretrained)
        log.info("loaded %s; freshly initialised: %s", args.pretrained, ", ".join(fresh))
    if args.train_batchnorm == "on":
        model = with_batchnorm(model)
    whiten = getattr(model, "whiten", None)
    if isinstance(whiten, torch.nn.Conv2d) and state is None:
        # Fitted on 5,000 training images, as airbench does: the covariance is settled by then.
        pick = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(args.seed))
        sample = train_idx[pick[:WHITEN_IMAGES]]
        fit_whitening(whiten, normalize(train_all.images[sample], mean, std))
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    train_model = model
    if world.distributed:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    compiled = use_compile(args.compile, device)
    if compiled:  # the compiled wrapper shares `model`'s parameters; state_dicts use `model`
        train_model = torch.compile(train_model)

    # --- optimiser, schedule, mixed precision --------------------------------------------
    steps_per_epoch = len(train_idx) // world.size // args.batch_size
    if steps_per_epoch < 1:
        raise DatasetError(
            f"{len(train_idx)} training images make no full batch of {args.batch_size} per "
            f"process; lower --batch-size"
        )
    teacher = None
    if args.teacher is not None:
        teacher = load_teacher(args.teacher, device, classes=classes, input_size=args.input_size,
                               mean=mean, std=std, channels_last=channels_last,
                               held_out={"split_seed": split_seed,
                                         "val_fraction": args.val_fraction})
        log.info("distilling from %s (alpha %.2f, T %.1f)", args.teacher.name,
                 args.distill_alpha, args.distill_temperature)
    views = None
    if teacher is not None and args.teacher_views:
        views = _teacher_views(args, teacher, train_all.images, train_idx, images, mean, std,
                               device, precision, channels_last, progress, world)
        teacher = None  # its work is done; the epochs replay the stored views
    optimizer = _make_optimizer(model, args)
    scheduler = _make_scheduler(optimizer, args, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    total_steps = args.epochs * steps_per_epoch
    lookahead = Lookahead(model, total_steps, every=args.lookahead_every) \
        if args.lookahead_every else None

    start_epoch, best, history, seconds = 0, {"accuracy": -1.0, "epoch": 0}, [], 0.0
    best_state: dict[str, torch.Tensor] = {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start_epoch, best, history = state["epoch"], state["best"], state["history"]
        best_state, seconds = state["best_state"], state["seconds"]
        if lookahead is not None:
            lookahead.load_state_dict(state["lookahead"])
        if state["stopped_early"]:  # the loop had already ended; only the final steps remain
            start_epoch = args.epochs
        log.info("resuming %s after epoch %d", args.resume, start_epoch)

    writer = None
    if world.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(args.logdir), purge_step=start_epoch * steps_per_epoch)
    state_file = state_path_for(args.output)
    eval_kw = dict(mean=mean, std=std, device=device, precision=precision,
                   channels_last=channels_last)

    # --- loop: train, validate, keep the best, save a resumable state ------------------------
    stopped_early = bool(state and state["stopped_early"])
    epoch_bar = trange(start_epoch, args.epochs, desc="epochs", unit="epoch",
                       initial=start_epoch, total=args.epochs, disable=not progress)
    for epochs_this_run, epoch in enumerate(epoch_bar, start=1):
        t0 = time.perf_counter()
        batches = Batches(images, labels, train_idx, args.batch_size, mean, std,
                          args.crop_padding, args.flip, generator_for_epoch(args.seed, epoch),
                          channels_last, world, views, flip_mode=args.flip_mode,
                          reflect=args.pad_mode == "reflect", epoch=epoch, seed=args.seed,
                          cutout=args.cutout)
        step0 = epoch * steps_per_epoch
        logged = [0]

        def on_log(loss: float, step0: int = step0, logged: list[int] = logged) -> None:
            logged[0] += args.log_every
            if writer is not None:
                writer.add_scalar("train/loss", loss, step0 + min(logged[0], steps_per_epoch))

        lr = optimizer.param_groups[-1]["lr"]
        step = [epoch * steps_per_epoch]

        def on_step(step: list[int] = step) -> None:
            step[0] += 1
            if args.whiten_bias_epochs and step[0] >= args.whiten_bias_epochs * steps_per_epoch:
                for group in optimizer.param_groups:  # lr 0: no step, no decay, exactly frozen
                    if group.get("name") == "whiten_bias":
                        group["lr"] = 0.0
            if lookahead is not None:
                lookahead.after_step(model, step[0])

        train_loss, rate = train_one_epoch(
            train_model, batches, optimizer, scheduler, scaler,
            label_smoothing=args.label_smoothing, precision=precision, device=device,
            log_every=args.log_every, on_log=on_log, progress=progress,
            description=f"epoch {epoch + 1}/{args.epochs}",
            teacher=teacher, distill_alpha=args.distill_alpha,
            distill_temperature=args.distill_temperature, on_step=on_step,
        )
        val_logits = predict_logits(model, images[val_idx.to(device)], **eval_kw)
        val_labels = train_all.labels[val_idx]
        val_loss = float(F.cross_entropy(val_logits, val_labels))
        val_acc = float((val_logits.argmax(1) == val_labels).float().mean())
        seconds += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 4),
                        "val_loss": round(val_loss, 4), "val_accuracy": round(val_acc, 4),
                        "lr": lr, "images_per_s": round(rate * world.size, 1),
                        "seconds": round(seconds, 1)})
        if writer is not None:
            writer.add_scalar("val/loss", val_loss, epoch + 1)
            writer.add_scalar("val/accuracy", val_acc, epoch + 1)
            writer.add_scalar("lr", lr, epoch + 1)
            writer.add_scalar("train/images_per_s", rate * world.size, epoch + 1)
            writer.flush()
        if val_acc > best["accuracy"]:
            best = {"accuracy": val_acc, "epoch": epoch + 1}
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if world.is_main:
            line = (f"epoch {epoch + 1:3d}  train loss {train_loss:.4f}  val loss "
                    f"{val_loss:.4f}  val acc {val_acc:.2%}  {rate * world.size:,.0f} img/s")
            if progress:
                tqdm.write(line)
            else:
                log.info(line)
        stopped_early = args.patience > 0 and epoch + 1 - best["epoch"] >= args.patience
        if world.is_main:
            save_state(state_file, {
                "args": _args_to_dict(args), "epoch": epoch + 1, "mean": mean, "std": std,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": torch.get_rng_state(), "best": best, "best_state": best_state,
                "history": history, "seconds": seconds, "stopped_early": stopped_early,
                "lookahead": lookahead.state_dict() if lookahead is not None else None,
            })
        barrier(world)
        if stopped_early:
            log.info("no better validation accuracy for %d epochs: stopping", args.patience)
            break
        if args.stop_after is not None and epochs_this_run >= args.stop_after \
                and epoch + 1 < args.epochs:
            if writer is not None:
                writer.close()
            return {"status": "paused", "epoch": epoch + 1, "resume": str(state_file)}

    # --- the best epoch's weights: calibrate, test once, report, checkpoint -----------------
    model.load_state_dict(best_state)
    if not world.is_main:
        return {"status": "done"}
    if args.train_batchnorm == "on":
        model = fold_into(model.eval(), build_model(args.arch, len(classes))).to(
            device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    meta = CheckpointMeta(
        arch=args.arch, classes=classes, input_size=args.input_size, mean=mean, std=std,
        tta=args.tta, epochs=len(history),
        data={"dataset": args.dataset, "source": train_all.source,
              "train_images": len(train_idx), "val_images": len(val_idx),
              "test_images": len(test) if test is not None else 0,
              "val_fraction": args.val_fraction, "split_seed": split_seed},
        # Names, not paths: the checkpoint travels, and /model shows this to any client.
        training={**{k: without_paths(v) for k, v in _args_to_dict(args).items()
                     if k not in ("resume", "stop_after", "progress", "cache_dir", "cache")},
                  "device": str(device), "device_name": _device_name(device),
                  "cpu_flags": cpu_flags(),
                  "precision": precision, "channels_last": channels_last, "compiled": compiled,
                  "world_size": world.size, "train_seconds": round(seconds, 1),
                  "best_epoch": best["epoch"], "stopped_early": stopped_early},
    )
    summary = finish_run(
        model, meta, writer,
        val=(images[val_idx.to(device)], train_all.labels[val_idx]),
        test=(test.images, test.labels) if test is not None else None,
        history=history, eval_kw=eval_kw, output=args.output,
        global_step=len(history),
    )
    save_checkpoint(args.output, model, meta, weights_dtype=getattr(torch, args.save_dtype))
    writer.close()
    return {"status": "done", **summary}


def _teacher_views(args, teacher, cpu_images, train_idx, images, mean, std, device, precision,
                   channels_last, progress, world) -> TeacherViews:
    """--teacher-views: the stored views from the cache, or computed now (and cached)."""
    key = cache_key(args.teacher, cpu_images, train_idx, k=args.teacher_views,
                    padding=args.crop_padding, flip=args.flip, seed=args.seed,
                    precision=precision)

    def compute() -> TeacherViews:
        return compute_views(teacher, images, train_idx, k=args.teacher_views,
                             padding=args.crop_padding, flip=args.flip, seed=args.seed,
                             mean=mean, std=std, device=device, precision=precision,
                             channels_last=channels_last, progress=progress)

    return load_or_compute_views(args.cache_dir if args.cache else None, key, compute,
                                 write=world.is_main)


def _device_name(device: torch.device) -> str:
    """What trained it, for meta.training: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    try:
        summary = main(args)
    except (CheckpointError, DatasetError, ResumeError, TrainingDiverged, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue with --resume NAME.state.pt", file=sys.stderr)
        return 130
    if summary.get("status") == "paused":
        print(f"paused after epoch {summary['epoch']}; continue with "
              f"--resume {summary['resume']}")
    elif "lines" in summary:
        print("\n".join(summary["lines"]))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
