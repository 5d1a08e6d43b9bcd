"""The resumable state of a run, written atomically after every epoch.

Data order and augmentation are drawn from a generator seeded by (seed, epoch), so model,
optimizer, scheduler, scaler and the epoch counter are all a run needs to continue exactly
where it stopped; torch's global RNG state is kept too for anything else that draws from it.
The file loads with `weights_only=True`, like every file this project reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import atomic_torch_save

STATE_FORMAT = "cnn-serve-train-state/1"


class ResumeError(Exception):
    pass


def state_path_for(output: Path) -> Path:
    """checkpoints/x.pt → checkpoints/x.state.pt"""
    return output.with_name(output.stem + ".state.pt")


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_torch_save({"format": STATE_FORMAT, **state}, path)


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ResumeError(f"--resume {p}: no such file (it is written next to --output as "
                          "NAME.state.pt after every epoch)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ResumeError(f"--resume {p}: cannot read it ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"--resume {p}: not a training state file of this project")
    return state


def generator_for_epoch(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's data order and augmentation, the same on every rank."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)
