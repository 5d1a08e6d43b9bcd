"""Training faults: a run killed with SIGKILL resumes, and no file is ever half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from training.resume import load_state

REPO = Path(__file__).resolve().parents[2]


def test_a_run_killed_mid_training_resumes_to_the_end(train_args, tmp_path: Path) -> None:
    argv = train_args("--epochs", "30", "--batch-size", "8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "training.run", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / "model.state.pt"
    deadline = time.monotonic() + 240
    try:
        # Poll until two epochs have been saved, then kill without warning.
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.exists() and load_state(state_file)["epoch"] >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # Whatever moment the kill hit, the state file is whole (written by os.replace) …
    saved_epoch = load_state(state_file)["epoch"]
    assert 2 <= saved_epoch < 30
    assert not (tmp_path / "model.pt").exists()

    # … and the run continues from it to the end.
    result = subprocess.run(
        [sys.executable, "-m", "training.run", "--resume", str(state_file), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {state_file} after epoch {saved_epoch}" in result.stderr
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.meta.epochs == 30 or loaded.meta.training["stopped_early"]
    assert torch.isfinite(next(iter(loaded.model.parameters()))).all()
