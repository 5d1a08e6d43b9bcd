"""A real server process for tests: `python -m app` (or uvicorn) on a free port, its log
collected, raw sockets and HTTP clients to talk to it, and a poll with a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from app_support import png

REPO = Path(__file__).resolve().parents[2]

UVICORN = ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "0",
           "--no-access-log"]
PYTHON_M_APP = ["-m", "app"]


class Server:
    def __init__(self, checkpoint: Path, argv: list[str] = UVICORN, **env_vars: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_SERVE_")}
        env.update(MODEL_PATH=str(checkpoint), CNN_SERVE_DEVICE="cpu", CNN_SERVE_PORT="0",
                   CNN_SERVE_MAX_UPLOAD_BYTES="1000000", CNN_SERVE_TORCH_THREADS="1")
        env.update(env_vars)
        self.proc = subprocess.Popen(  # its own process group: close() ends it all
            [sys.executable, *argv], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        try:
            self.url = self._wait_for_url(deadline=time.monotonic() + 60)
        except BaseException:
            self.close()  # nobody else holds the process to end it
            raise
        self.port = int(self.url.rsplit(":", 1)[1])

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

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        poll(healthy, timeout, "the server to become healthy:\n" + self.drain_log())

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60) -> None:
        poll(lambda: self.drain_log().count(text) >= count, timeout,
             f"{count}× {text!r} in the log")

    def drain_log(self) -> str:
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return "".join(self.log)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def refuses_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5):
                pass
        # A reset: the listening socket closed in the middle of this handshake (seen on
        # loopback, where the whole handshake runs inside connect()).
        except (ConnectionRefusedError, ConnectionResetError):
            return True
        return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # workers, should any outlive it
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.pump.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Until `condition()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def multipart(data: bytes, field: str = "file") -> tuple[bytes, str]:
    boundary = "livetestboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="x.png"\r\nContent-Type: image/png\r\n\r\n').encode() + data \
        + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def request_head(path: str, body_length: int, content_type: str,
                 extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {body_length}\r\n{extra}\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_peer(sock: socket.socket) -> bool:
    """Reads until the server closes the connection; True when it did (EOF or reset)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def finish_a_request_across_sigterm(server: Server, processes: int = 1) -> None:
    """Hold a request in the app, SIGTERM the server, see new connections refused, then
    complete the request once its `processes` server processes are shutting down: it gets its
    200 (and `connection: close`), and the server exits 0."""
    body, content_type = multipart(png())
    with server.connect() as sock:
        sock.sendall(request_head("/predict", len(body), content_type,
                                  "Expect: 100-continue\r\n"))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")  # the app reads the body

        server.proc.send_signal(signal.SIGTERM)
        poll(server.refuses_connections, 30, "new connections to be refused")
        # A supervisor stops accepting before its workers hear of the signal.
        server.wait_for_log("Shutting down", count=processes)
        sock.sendall(body)
        status, headers, answer = read_response(sock)
    assert status == 200 and json.loads(answer)["class"]
    assert headers["connection"] == "close"
    code = server.proc.wait(60)
    server.pump.join(10)
    assert code == 0, f"exit status {code}:\n{server.drain_log()}"
