"""Bring a tutorial reader's saved model over to our checkpoint format, without running its code.

    python -m training.convert tudui_29.pth models/mine.pt

Accepted: a bare state_dict (`torch.save(model.state_dict(), p)`), a dict holding one
(`{"model_state_dict": …}`), our own checkpoints, and a whole model pickled with
`torch.save(model)` whose class lives in the reader's own script. The last is read with
`weights_only=True` plus an allow-list: torch.nn's layer classes, torchvision's VGG, and an
empty stand-in for each of the reader's own module classes. The stand-in has none of the
reader's code, so nothing from the file runs; anything needing more is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import build_model
from models.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    read_checkpoint,
    save_checkpoint,
    tutorial_meta,
)
from models.classes import CIFAR10_CLASSES


class ConversionError(Exception):
    pass


def _nn_layer_classes() -> dict[str, type]:
    allowed = {}
    for name in dir(nn):
        obj = getattr(nn, name)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            allowed[f"{obj.__module__}.{obj.__qualname__}"] = obj
    from torchvision.models.vgg import VGG

    allowed[f"{VGG.__module__}.{VGG.__qualname__}"] = VGG
    return allowed


class _StandIn(nn.Module):
    """Takes the place of a reader's own nn.Module subclass while unpickling.

    Unpickling a module only creates an empty instance and fills its __dict__; a call with
    arguments means the global is a function, not a module class, and is refused.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        if args or kwargs:
            raise pickle.UnpicklingError(
                f"{cls.__module__}.{cls.__qualname__} is called with arguments, so it is not a "
                "module class; refusing to go on"
            )
        return super().__new__(cls)


def _stand_in(path: str) -> type:
    module, _, qualname = path.rpartition(".")
    return type(qualname, (_StandIn,), {"__module__": module, "__qualname__": qualname})


def _refusal(name: str) -> str | None:
    """Why a global may not get a stand-in, or None if it may."""
    module = name.rpartition(".")[0]
    top = module.split(".")[0]
    if not module or not all(part.isidentifier() for part in name.split(".")):
        return "is not a class name"
    if top in ("torch", "torchvision", "numpy", "builtins") or (
        top in sys.stdlib_module_names and top != "__main__"
    ):
        return "is library code outside the allow-list of torch.nn layers"
    return None


def _load_whole_model(data: bytes, source: Path) -> Any:
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception as exc:
        raise ConversionError(f"{source}: not a torch.save zip file ({exc})") from None
    layers = _nn_layer_classes()
    allowed: list[Any] = []
    for name in needed:
        if name in layers:
            allowed.append(layers[name])
            continue
        why = _refusal(name)
        if why is not None:
            raise ConversionError(
                f"{source}: refused: it needs {name}, which {why}; loading it could run code"
            )
        allowed.append(_stand_in(name))
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch wraps the unpickler's reason in a long generic text; keep only the reason.
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        detail = reason.group(1) if reason else str(exc).splitlines()[0]
        raise ConversionError(f"{source}: refused: {detail[:300]}") from None


def _find_state_dict(obj: Any, source: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if key in obj:
                return _find_state_dict(obj[key], source)
    raise ConversionError(f"{source}: found {type(obj).__name__}, not a model or state_dict")


def match_architecture(
    state: dict[str, torch.Tensor], source: Path
) -> tuple[str, dict[str, torch.Tensor], list[str]]:
    """(arch, state renamed to our parameter names, notes) for a foreign state_dict."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    tensors = list(state.values())
    num_classes = tensors[-1].shape[0] if tensors and tensors[-1].dim() == 1 else 0
    for arch in ("tutorial_cnn", "vgg16"):
        if num_classes < 2:
            break
        own = build_model(arch, num_classes).state_dict()
        if list(own) == list(state) and all(own[k].shape == state[k].shape for k in own):
            return arch, state, []
        if [v.shape for v in own.values()] == [v.shape for v in tensors]:
            renamed = dict(zip(own, tensors, strict=True))
            prefix = next(iter(state)).split(".")[0]
            return arch, renamed, [f"renamed parameters by position ({prefix}.* → "
                                   f"{next(iter(own)).split('.')[0]}.*)"]
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(state.items())[:4])
    raise ConversionError(
        f"{source}: the parameters match neither tutorial_cnn nor vgg16 ({shapes} …)"
    )


def convert(
    source: Path, target: Path, *, classes: list[str] | None, mean: list[float],
    std: list[float],
) -> tuple[CheckpointMeta, list[str]]:
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConversionError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    try:  # already weights only: ours or a bare state_dict
        state, meta, _ = read_checkpoint(source)
        if classes is None and meta.data.get("dataset") != "unknown (bare state_dict)":
            arch, state, notes = meta.arch, state, ["already in our format; copied"]
        else:
            arch, state, notes = match_architecture(state, source)
            meta = None
    except CheckpointError as exc:
        if "refused" not in exc.reason:
            raise ConversionError(str(exc)) from None
        obj = _load_whole_model(data, source)
        arch, state, notes = match_architecture(_find_state_dict(obj, source), source)
        notes.insert(0, f"read a whole pickled model ({type(obj).__qualname__}) with stand-ins")
        meta = None
    model = build_model(arch, len(next(reversed(state.values()))))
    model.load_state_dict(state, strict=True)
    if meta is None:
        n = len(next(reversed(state.values())))
        names = classes or (list(CIFAR10_CLASSES) if n == 10 else None)
        if names is None or len(names) != n:
            raise ConversionError(
                f"{source}: the network has {n} outputs; pass --classes with {n} names"
            )
        meta = tutorial_meta(n)
        meta.arch, meta.classes, meta.mean, meta.std = arch, names, mean, std
        meta.data = {"dataset": "converted", "source": str(source),
                     "source_sha256": hashlib.sha256(data).hexdigest()}
    save_checkpoint(target, model, meta)
    return meta, notes


def _floats(text: str) -> list[float]:
    values = [float(v) for v in text.split(",")]
    if len(values) != 3:
        raise argparse.ArgumentTypeError("give 3 comma-separated numbers")
    return values


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.convert",
        description="Convert a tutorial state_dict or torch.save(model) file to our format.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", type=Path, help="the reader's .pth file")
    p.add_argument("output", type=Path, help="where to write our checkpoint")
    p.add_argument("--classes", type=lambda s: s.split(","), default=None,
                   help="comma-separated class names (default: CIFAR-10's, for 10 outputs)")
    p.add_argument("--mean", type=_floats, default=[0.0, 0.0, 0.0],
                   help="normalisation the model was trained with (the tutorial uses none)")
    p.add_argument("--std", type=_floats, default=[1.0, 1.0, 1.0], help="see --mean")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        meta, notes = convert(args.input, args.output, classes=args.classes,
                              mean=args.mean, std=args.std)
    except (ConversionError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {args.output}: {meta.arch}, {len(meta.classes)} classes, "
          f"mean {meta.mean}, std {meta.std}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
