"""The real thing: `python -m uvicorn app.main:app` in a subprocess, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from app_support import png
from live_server import PYTHON_M_APP, REPO, Server, finish_a_request_across_sigterm, poll
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow


@pytest.fixture
def server(checkpoint: Path) -> Iterator[Server]:
    s = Server(checkpoint)
    try:
        yield s
    finally:
        s.close()


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
    # Plain `uvicorn` shuts down gracefully, then re-raises the signal it caught (`python -m
    # app` exits 0 instead: tests/app/server/test_app_serving.py).
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
    server.pump.join(10)
    log = server.drain_log()
    assert '"request_id":"over-the-wire"' in log and '"route":"/predict"' in log
    assert '"message":"stopped"' in log  # the lifespan's shutdown ran


def test_python_m_app_serves_from_several_worker_processes(checkpoint: Path) -> None:
    s = Server(checkpoint, PYTHON_M_APP, CNN_SERVE_WORKERS="2")
    try:
        s.wait_healthy()
        s.wait_for_log("ready for connections", count=2)
        with httpx.Client(base_url=s.url) as client:  # new connections dealt in turn
            codes = [client.post("/predict", files={"file": ("x.png", png(), "image/png")},
                                 headers={"Connection": "close"}).status_code
                     for _ in range(20)]
            # Whichever worker answers a scrape, it reports all 20 (10 each, below);
            # per-process numbers would show each worker's share.
            scrapes = [client.get("/metrics", headers={"Connection": "close"}).text
                       for _ in range(10)]
        assert codes == [200] * 20
        # Idle, the supervisor sleeps in its wait; it once polled at 100% of a core.
        assert supervisor_cpu_over(s.proc.pid, window_s=1.0) < 0.3
        for text in scrapes:
            samples = {(x.name, tuple(sorted(x.labels.items()))): x.value
                       for family in text_string_to_metric_families(text)
                       for x in family.samples}
            ok = (("method", "POST"), ("route", "/predict"), ("status", "200"))
            assert samples[("cnn_serve_http_requests_total", ok)] == 20
            assert sum(v for (name, _), v in samples.items()
                       if name == "cnn_serve_predictions_total") == 20
            assert samples[("cnn_serve_queue_depth", ())] == 0
            assert [v for (name, _), v in samples.items()
                    if name == "cnn_serve_model_info"] == [1]
        finish_a_request_across_sigterm(s, processes=2)  # SIGTERM, exit status 0
        log = s.drain_log()
        served_by = Counter(json.loads(line)["pid"] for line in log.splitlines()
                            if '"route":"/predict"' in line and '"status":200' in line)
        assert sorted(served_by.values()) == [10, 11]  # + the request across SIGTERM
        assert log.count('"message":"ready: serving random_cnn') == 2  # one per worker
        assert log.count('"message":"stopped"') == 2
    finally:
        s.close()


def supervisor_cpu_over(pid: int, window_s: float) -> float:
    """CPU seconds the process used during the next `window_s` seconds (from /proc)."""
    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    before = cpu()
    time.sleep(window_s)  # the window measured, not a wait for something to happen
    return cpu() - before


def test_python_m_app_exits_non_zero_when_a_worker_cannot_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_SERVE_")}
    env.update(MODEL_PATH=str(tmp_path / "missing.pt"), CNN_SERVE_DEVICE="cpu",
               CNN_SERVE_PORT="0", CNN_SERVE_WORKERS="2")
    result = subprocess.run([sys.executable, "-m", "app"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "no such file" in result.stderr and "stopping the others" in result.stderr


def test_workers_stop_when_the_supervisor_is_killed(checkpoint: Path) -> None:
    # SIGKILL cannot be handled: the kernel's parent-death signal must end the workers, or
    # they would go on serving the port as orphans.
    s = Server(checkpoint, PYTHON_M_APP, CNN_SERVE_WORKERS="2")
    try:
        s.wait_healthy()
        s.wait_for_log("ready: serving", count=2)
        pid = s.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = [int(c) for c in children
                   if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2
        s.proc.kill()

        def gone(worker: int) -> bool:
            try:
                return Path(f"/proc/{worker}/status").read_text().count("State:\tZ") == 1
            except FileNotFoundError:
                return True

        poll(lambda: all(gone(w) for w in workers), 30, "the orphaned workers to exit")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{s.url}/healthz")
    finally:
        s.close()
