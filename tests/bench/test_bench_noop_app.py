"""bench/noop_app.py: the HTTP-alone ceiling answers like a multipart endpoint (200 for a
`file` part, 422 without), served through our own process model."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import serve

REPO = Path(__file__).resolve().parents[2]


def test_it_serves_from_several_worker_processes_with_connections_dealt(
    tmp_path: Path,
) -> None:
    port = serve.free_port()
    log = tmp_path / "noop.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.noop_app", "--port", str(port), "--workers", "2"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("CNN_SERVE_")})
    try:
        body, content_type = serve.multipart(serve.make_images(tmp_path)["png32"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if serve.post(port, body, content_type, timeout=5) == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(log.read_text())
        # both workers start the no-op app, not ours (no model is loaded)
        while log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "connections dealt in turn" in log.read_text()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 404  # our app would answer it
        finally:
            conn.close()
        wrong_field = body.replace(b'name="file"', b'name="other"')
        assert serve.post(port, wrong_field, content_type) == 422
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
