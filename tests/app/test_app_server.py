"""The real thing: `python -m uvicorn app.main:app` in a subprocess, spoken to over HTTP."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from app_support import png

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


UVICORN = ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "0",
           "--no-access-log"]


class Server:
    def __init__(self, checkpoint: Path, argv: list[str] = UVICORN, **env_vars: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_SERVE_")}
        env.update(MODEL_PATH=str(checkpoint), CNN_SERVE_DEVICE="cpu",
                   CNN_SERVE_MAX_UPLOAD_BYTES="1000000", CNN_SERVE_TORCH_THREADS="1")
        env.update(env_vars)
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        self.url = self._wait_for_url(deadline=time.monotonic() + 60)

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def _next_line(self, deadline: float) -> str:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError("server said nothing in time:\n" + "".join(self.log)) from None
        self.log.append(line)
        return line

    def _wait_for_url(self, deadline: float) -> str:
        while True:
            found = re.search(r"Uvicorn running on (http://\S+)", self._next_line(deadline))
            if found:
                return found.group(1)

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("server never became healthy:\n" + "".join(self.log))

    def drain_log(self) -> str:
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return "".join(self.log)


def _close(s: Server) -> None:
    if s.proc.poll() is None:
        s.proc.kill()
    s.proc.wait(10)
    s.pump.join(10)
    assert s.proc.stderr is not None
    s.proc.stderr.close()


@pytest.fixture
def server(checkpoint: Path) -> Iterator[Server]:
    s = Server(checkpoint)
    try:
        yield s
    finally:
        _close(s)


def test_real_server_classifies_an_uploaded_image(server: Server) -> None:
    server.wait_healthy()
    response = httpx.post(
        f"{server.url}/predict?top_k=2", files={"file": ("x.png", png(), "image/png")},
        headers={"X-Request-ID": "over-the-wire"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "over-the-wire"
    body = response.json()
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert len(body["top_k"]) == 2

    def thirty_megabytes() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(30):
            yield b"\0" * (1 << 20)
        yield b"\r\n--b--\r\n"

    too_big = httpx.post(
        f"{server.url}/predict", content=thirty_megabytes(),
        headers={"content-type": "multipart/form-data; boundary=b"}, timeout=30,
    )
    assert too_big.status_code == 413
    assert "1,000,000-byte limit per image" in too_big.json()["detail"]

    server.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
    server.pump.join(10)
    log = server.drain_log()
    assert '"request_id":"over-the-wire"' in log and '"route":"/predict"' in log
    assert '"message":"stopped"' in log  # the lifespan's shutdown ran


def test_python_m_app_serves_from_several_worker_processes(checkpoint: Path) -> None:
    s = Server(checkpoint, ["-m", "app"], CNN_SERVE_PORT="0", CNN_SERVE_WORKERS="2")
    try:
        s.wait_healthy()
        with httpx.Client(base_url=s.url) as client:  # new connections spread over workers
            codes = [client.post("/predict", files={"file": ("x.png", png(), "image/png")},
                                 headers={"Connection": "close"}).status_code
                     for _ in range(6)]
        assert codes == [200] * 6
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) in (0, -signal.SIGTERM)
        s.pump.join(10)
        log = s.drain_log()
        assert log.count('"message":"ready: serving random_cnn') == 2  # one per worker
        assert log.count('"message":"stopped"') == 2
    finally:
        _close(s)


def test_python_m_app_exits_non_zero_when_a_worker_cannot_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_SERVE_")}
    env.update(MODEL_PATH=str(tmp_path / "missing.pt"), CNN_SERVE_DEVICE="cpu",
               CNN_SERVE_PORT="0", CNN_SERVE_WORKERS="2")
    result = subprocess.run([sys.executable, "-m", "app"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "no such file" in result.stderr and "stopping the others" in result.stderr
