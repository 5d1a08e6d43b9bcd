"""The harness of bench/soak.py: our server on a free port, the memory of its processes, wrk
with a mix of uploads, probes on fresh connections, and the bookkeeping of checks and figures.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.serve import Server, free_port, wrk_result
from bench.serve import make_images as serve_images

REPO = Path(__file__).resolve().parents[1]
MIXED_LUA = REPO / "bench" / "wrk_mixed.lua"
FAULTS = REPO / "tests" / "app" / "faults"


# --- inputs -------------------------------------------------------------------------------------
def make_images(folder: Path) -> dict[str, Path]:
    """bench/serve.py's images, the JPEG at a phone photo's 1600×1066 rather than 12 MP."""
    return serve_images(folder, jpeg_size=(1600, 1066))


def mix(images: dict[str, Path]) -> list[Path]:
    """What wrk sends in turn: half tiny PNGs, a quarter each photo PNG and JPEG."""
    return [images["png32"], images["photo"], images["png32"], images["jpeg"]]


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path
    checkpoint: Path
    images: dict[str, Path]
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.failures.append(what)
        return "ok" if ok else "FAILED"


# --- servers and processes ------------------------------------------------------------------------
@contextmanager
def our_server(ctx: Context, name: str, **env: str) -> Iterator[Server]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("CNN_SERVE_") and k != "MODEL_PATH"}
    port = free_port()
    server = Server(name, [sys.executable, "-m", "app"],
                    {**base, "MODEL_PATH": str(ctx.checkpoint), "CNN_SERVE_HOST": "127.0.0.1",
                     "CNN_SERVE_PORT": str(port), **env},
                    port, ctx.tmp / f"{name}.log")
    try:
        server.wait_ready(ctx.images["png32"])
        yield server
    finally:
        server.stop()


def process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _sum_kb(pid: int, name: str, field_name: str) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            text = Path(f"/proc/{p}/{name}").read_text()
        except OSError:
            continue
        found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
        total += int(found.group(1)) if found else 0
    return total / 1024


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (Linux /proc). Pages
    the processes share (torch's libraries) count once per process."""
    return _sum_kb(pid, "status", "VmRSS")


def pss_mb(pid: int) -> float:
    """Proportional set size of the process tree: shared pages split between their users, so
    the sum is what the tree really holds."""
    return _sum_kb(pid, "smaps_rollup", "Pss")


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, float, float]] = []  # seconds, RSS, PSS (MiB)
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self._t0, rss_mb(self.pid),
                                 pss_mb(self.pid)))
            if self._halt.wait(self.interval_s):
                return

    def stop(self) -> list[tuple[float, float, float]]:
        self._halt.set()
        self.join()
        return self.samples


def worker_pids(server: Server) -> list[int]:
    return [int(p) for p in re.findall(r"Started server process \[(\d+)\]",
                                       server.log.read_text(errors="replace"))]


def log_count(server: Server, pattern: str) -> int:
    return len(re.findall(pattern, server.log.read_text(errors="replace")))


def wait_for(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `condition()` held, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.01)
    return None


# --- wrk ----------------------------------------------------------------------------------------
@dataclass
class Load:
    requests: int
    seconds: float
    errors: dict[str, int]
    non2xx: int
    retry_after_503: int
    by_status: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def line(self) -> str:
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.by_status.items()))
        errors = ", ".join(f"{k} {v}" for k, v in self.errors.items() if v) or "none"
        return (f"{self.requests:,} answers in {self.seconds:.1f} s = {self.rps:,.1f}/s; "
                f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.0f} ms; "
                f"statuses {{{statuses}}}; socket errors: {errors}")


def wrk(ctx: Context, port: int, files: list[Path], connections: int, seconds: float) -> Load:
    args = ctx.args
    argv = [args.wrk, "-t", str(max(1, min(args.wrk_threads, connections))),
            "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", f"{args.timeout:g}s",
            "-s", str(MIXED_LUA), f"http://127.0.0.1:{port}/predict", "--",
            *map(str, files)]
    raw = wrk_result(argv)
    return Load(
        requests=raw["requests"], seconds=raw["duration_us"] / 1e6,
        errors={"connect": raw["connect_errors"], "read": raw["read_errors"],
                "write": raw["write_errors"], "timeout": raw["timeouts"]},
        non2xx=raw["non2xx"], retry_after_503=raw["retry_after_503"],
        by_status=raw["by_status"], p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )


# --- plain HTTP from Python -----------------------------------------------------------------------
def request(port: int, method: str, path: str, body: bytes = b"", content_type: str = "",
            timeout: float = 30) -> tuple[int, dict[str, str], bytes, float]:
    """One request on a new connection: status, headers, body, seconds."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        conn.request(method, path, body or None, headers)
        response = conn.getresponse()
        data = response.read()
        return (response.status, {k.lower(): v for k, v in response.getheaders()}, data,
                time.monotonic() - start)
    finally:
        conn.close()


class Prober(threading.Thread):
    """Every `interval_s`: a request on a new connection; records (status or error, seconds)."""

    def __init__(self, port: int, method: str, path: str, body: bytes = b"",
                 content_type: str = "", interval_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.args = (port, method, path, body, content_type)
        self.interval_s = interval_s
        self.results: list[tuple[str, float, bool]] = []  # outcome, seconds, Retry-After?
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            start = time.monotonic()
            try:
                status, headers, _, seconds = request(*self.args, timeout=30)
                self.results.append((str(status), seconds, "retry-after" in headers))
            except OSError as exc:
                self.results.append((type(exc).__name__, time.monotonic() - start, False))
            self._halt.wait(self.interval_s)

    def stop(self) -> list[tuple[str, float, bool]]:
        self._halt.set()
        self.join()
        return self.results


def summary(results: list[tuple[str, float, bool]], outcome: str | None = None) -> str:
    chosen = [r for r in results if outcome is None or r[0] == outcome]
    counts = collections.Counter(r[0] for r in results)
    if not chosen:
        return f"{dict(counts)}"
    times = sorted(r[1] * 1000 for r in chosen)
    p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
    return (f"{dict(counts)}, latency p50 {statistics.median(times):.1f} ms, "
            f"p90 {p90:.1f} ms, max {times[-1]:.1f} ms")


def multipart_bytes(data: bytes) -> tuple[bytes, str]:
    boundary = "soakfuzzboundary7f3a"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="fuzz"\r\nContent-Type: application/octet-stream\r\n\r\n').encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
