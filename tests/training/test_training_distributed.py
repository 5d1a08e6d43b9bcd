"""The same training script under torchrun: two gloo processes on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_two_process_gloo_torchrun_trains_and_rank_0_saves(train_args, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "training.run", *train_args("--batch-size", "8")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.meta.training["world_size"] == 2
    assert loaded.meta.training["device"] == "cpu"
    assert loaded.meta.epochs == 2
    assert result.stderr.count("epoch   1 ") == 1  # only rank 0 logs
    assert list(tmp_path.glob("model.state.pt"))

    # Each process takes its half of the 162 training images: 81 → 10 steps of 8 per epoch,
    # so two epochs end at step 20 (one process alone would need 40).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "runs-model")).Reload()
    assert events.Scalars("train/loss")[-1].step == 20
