"""The checkpoint format both training and serving rely on.

One file, written with `torch.save`, that loads with `torch.load(path, weights_only=True)`:

    {"format": "cnn-serve/1", "state_dict": {...tensors...}, "meta": {...plain values...}}

`meta` says how to rebuild the network (`arch`, `classes`), how to feed it (`input_size`, `mean`,
`std`), how to read its output (`temperature`), and where it came from (metrics, epochs, data,
torch version, creation time). A bare state_dict — the tutorial's recommended
`torch.save(model.state_dict(), path)` — is accepted too, with the tutorial's defaults.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import build_model, fold_batchnorm, get_architecture
from models.classes import CIFAR10_CLASSES
from models.devices import resolve_device
from models.inference import TTA_MODES
from models.preprocess import TUTORIAL_MEAN, TUTORIAL_STD

FORMAT = "cnn-serve/1"


class CheckpointError(Exception):
    """A checkpoint could not be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"cannot load checkpoint {os.fspath(path)!r}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


@dataclass
class CheckpointMeta:
    arch: str
    classes: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    temperature: float = 1.0
    tta: str = "off"  # test-time augmentation the metrics and temperature were measured with
    # e.g. {"val_accuracy": 0.74, "val_nll": …, "val_ece_before": …, "test_accuracy": …}
    metrics: dict[str, float] = field(default_factory=dict)
    epochs: int = 0
    # e.g. {"dataset": "folder", "source": "cifar10", "train_images": 45000, "val_images": 5000}
    data: dict[str, Any] = field(default_factory=dict)
    # hyper-parameters and the device / precision that ran them
    training: dict[str, Any] = field(default_factory=dict)
    torch_version: str = field(default_factory=lambda: str(torch.__version__))
    created_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot be right."""
        arch = get_architecture(self.arch)
        if len(self.classes) < 2 or not all(isinstance(c, str) and c for c in self.classes):
            raise ValueError(f"classes must be at least 2 non-empty names, got {self.classes!r}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names repeat: {self.classes!r}")
        if not isinstance(self.input_size, int) or not 8 <= self.input_size <= 1024:
            raise ValueError(f"input_size must be an integer in 8…1024, got {self.input_size!r}")
        if arch.fixed_input_size and self.input_size != arch.default_input_size:
            raise ValueError(
                f"{self.arch} only takes {arch.default_input_size}px inputs, "
                f"meta says {self.input_size}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(math.isfinite(float(v)) for v in values):
                raise ValueError(f"{name} must be 3 finite numbers, got {values!r}")
        if any(float(s) <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std!r}")
        if self.tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {self.tta!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")

    def public_dict(self) -> dict[str, Any]:
        """`to_dict` with every filesystem path in `data` and `training` cut to its last part:
        what a client may see. Checkpoints written before training stored names only still
        carry the training machine's folders there."""
        raw = self.to_dict()
        return {**raw, "data": without_paths(raw["data"]),
                "training": without_paths(raw["training"])}

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        # torch.__version__ is a str subclass that weights_only loading refuses.
        raw["torch_version"] = str(raw["torch_version"])
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckpointMeta:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"arch", "classes", "input_size", "mean", "std"} - set(raw)
        if missing:
            raise ValueError(f"meta lacks {', '.join(sorted(missing))}")
        if not isinstance(raw["classes"], (list, tuple)):
            raise ValueError(f"classes must be a list of names, got {raw['classes']!r}")
        meta = cls(**{k: v for k, v in raw.items() if k in known})
        meta.classes = list(meta.classes)
        meta.mean = [float(v) for v in meta.mean]
        meta.std = [float(v) for v in meta.std]
        meta.temperature = float(meta.temperature)
        meta.validate()
        return meta


# An absolute, home-relative or Windows path inside a string: "/root/.cache/cifar10/train",
# "~/data", "C:\\runs\\x". Relative names ("cifar10", "m.pt") are left alone.
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:[\\/]|~[\\/]?|/)[^\s()'\",;]*")


def _last_part(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1]


def strip_path(text: str) -> str:
    """A path ("runs/x", "/data/cifar10") → its last component; paths inside a sentence
    likewise ("CIFAR-10 (/data)" → "CIFAR-10 (data)")."""
    if re.fullmatch(r"[^\s]*[\\/][^\s]*", text):
        return _last_part(text)
    return _PATH.sub(lambda m: _last_part(m.group(0)), text)


def without_paths(value: Any) -> Any:
    if isinstance(value, str):
        return strip_path(value)
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_paths(v) for v in value]
    return value


def tutorial_meta(num_classes: int = 10) -> CheckpointMeta:
    """What a bare state_dict from the tutorial means: its CNN, CIFAR-10, no normalisation."""
    classes = list(CIFAR10_CLASSES) if num_classes == 10 else [str(i) for i in range(num_classes)]
    return CheckpointMeta(
        arch="tutorial_cnn", classes=classes, input_size=32,
        mean=list(TUTORIAL_MEAN), std=list(TUTORIAL_STD),
        data={"dataset": "unknown (bare state_dict)"}, created_at="unknown",
        torch_version="unknown",
    )


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a checkpoint is meant to be read by other users too
        # (a service running as another uid, a read-only mount into a container).
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, meta: CheckpointMeta,
    weights_dtype: torch.dtype | None = None,
) -> None:
    """`weights_dtype=torch.float16` halves the file (the ResNet-9: 26 → 13 MB); loading
    copies the weights back into the network's float32 parameters."""
    meta.validate()
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if weights_dtype is not None and v.is_floating_point():
            v = v.to(weights_dtype)
        state[k] = v.clone().contiguous()
    atomic_torch_save({"format": FORMAT, "state_dict": state, "meta": meta.to_dict()}, path)


@dataclass
class LoadedModel:
    model: nn.Module
    meta: CheckpointMeta
    sha256: str
    path: str
    device: torch.device


def _strip_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict) and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], CheckpointMeta, str]:
    """The state_dict, meta and sha256 of a file, without building a network.

    Refuses anything `weights_only=True` refuses: no code in the file ever runs.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(path, "no such file")
    if not p.is_file():
        raise CheckpointError(path, "not a regular file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(path, f"cannot read it ({exc.strerror or exc})") from None
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = re.search(r"GLOBAL (\S+)", str(exc))
        raise CheckpointError(
            path,
            "refused: loading it would run code from the file"
            + (f" (it needs {needs.group(1)})" if needs else "")
            + "; only weights are loaded. If it is a whole model saved with torch.save(model), "
            "convert it with `python -m training.convert IN OUT`",
        ) from None
    except Exception as exc:
        raise CheckpointError(
            path, f"not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None

    if isinstance(obj, dict) and "state_dict" in obj and "meta" in obj:
        state, raw_meta = obj["state_dict"], obj["meta"]
        if not _is_state_dict(state) or not isinstance(raw_meta, dict):
            raise CheckpointError(path, "its 'state_dict' or 'meta' entry has the wrong type")
        try:
            meta = CheckpointMeta.from_dict(raw_meta)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(path, f"bad meta: {exc}") from None
        return _strip_ddp_prefix(state), meta, sha256
    if _is_state_dict(obj):
        state = _strip_ddp_prefix(obj)
        head = state.get("model.8.weight")
        meta = tutorial_meta(head.shape[0] if head is not None and head.dim() == 2 else 10)
        return state, meta, sha256
    raise CheckpointError(
        path,
        f"not a checkpoint: expected a dict with 'state_dict' and 'meta', or a bare state_dict, "
        f"found {type(obj).__name__}",
    )


def _describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items() if k in state and state[k].shape != v.shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(
            f"unexpected {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}"
        )
    if wrong:
        parts.append(f"shape mismatch {'; '.join(wrong[:3])}{' …' if len(wrong) > 3 else ''}")
    return "; ".join(parts) or "the tensors do not fit"


def load_checkpoint(
    path: str | os.PathLike[str], device: str = "cpu", *, fold_bn: bool = False
) -> LoadedModel:
    """Rebuild the network from a checkpoint's meta, load its weights strictly, in eval mode.

    `fold_bn` folds BatchNorm into the convolutions before it (inference only: the weights
    no longer match the checkpoint's keys)."""
    state, meta, sha256 = read_checkpoint(path)
    try:
        target = resolve_device(device)
    except ValueError as exc:
        raise CheckpointError(path, str(exc)) from None
    model = build_model(meta.arch, len(meta.classes))
    own = model.state_dict()
    if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
        raise CheckpointError(
            path, f"its weights do not fit {meta.arch} with {len(meta.classes)} classes: "
            + _describe_mismatch(model, state)
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    if fold_bn:
        fold_batchnorm(model)
    model.to(target)
    return LoadedModel(model=model, meta=meta, sha256=sha256, path=os.fspath(path), device=target)
