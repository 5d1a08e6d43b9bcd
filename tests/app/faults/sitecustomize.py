"""Test-only faults for real server processes, loaded with PYTHONPATH=tests/app/faults.

Python imports `sitecustomize` at start-up in every process, workers spawned by `python -m app`
included, so this breaks the inference worker of a real server without any hook in app/:

- an image whose top-left pixel is (1, 2, 3) hangs the inference thread for good;
- an image whose top-left pixel is (3, 2, 1) crashes the batcher's task (its batch observer
  raises, which nothing in the task catches).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository

from app.inference.predictor import Predictor  # noqa: E402
from app.observability import Metrics  # noqa: E402

HANG = [1, 2, 3]
CRASH = [3, 2, 1]
_crash_next_batch = threading.Event()
_predict = Predictor.predict
_observe_batch = Metrics.observe_batch


def predict(self, images):  # type: ignore[no-untyped-def]
    corners = [image[:, 0, 0].tolist() for image in images]
    if HANG in corners:
        threading.Event().wait()
    if CRASH in corners:
        _crash_next_batch.set()
    return _predict(self, images)


def observe_batch(self, size, seconds):  # type: ignore[no-untyped-def]
    if _crash_next_batch.is_set():
        raise RuntimeError("injected fault: the batch observer failed")
    _observe_batch(self, size, seconds)


Predictor.predict = predict  # type: ignore[method-assign]
Metrics.observe_batch = observe_batch  # type: ignore[method-assign]
