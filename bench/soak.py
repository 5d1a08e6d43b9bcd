"""Reliability soak: the long versions of the service's reliability tests, with figures.

Each scenario starts our service (`python -m app`, as deployed) on a free port with a
random-weights checkpoint (or --checkpoint), does its worst to it, and prints what happened:

  sustained       --duration s at --connections connections of mixed uploads (32×32 PNGs, the
                  451×300 photo PNG, a 1600×1066 JPEG), driven by wrk: req/s, p50/p99, errors,
                  non-2xx; the RSS of all server processes every second, and its growth after
                  the warm-up.
  overload        --overload-connections connections against a queue of --overload-queue images
                  per worker: 200s, 503s (and how many carry Retry-After), errors; /healthz and
                  /predict probed alongside; how long until a request succeeds once it stops.
  shutdown        SIGTERM during load: what the requests in flight got, how soon new connections
                  were refused, the exit status and how long the exit took.
  slow-clients    byte-a-second uploads (headers, and bodies) plus clients hanging up mid-upload
                  and mid-inference, while wrk measures everyone else; when and how the slow
                  ones were cut off, 408/499 counts, RSS.
  fuzz-decode     --fuzz-cases mutated PNG/JPEG/GIF/WebP/BMP/TIFF files through the decode path
                  in child processes: outcomes, escaped exceptions (bugs), hangs, peak RSS.
                  --atheris-seconds adds a coverage-guided atheris run.
  fuzz-http       --fuzz-http-cases mutated uploads through the real server: statuses (a 5xx is
                  a bug), slowest answer, RSS.
  worker-failure  a worker process killed with SIGKILL, and an inference thread hung (injected
                  with tests/app/faults): how long until a fresh worker serves, what requests
                  got meanwhile.

    python bench/soak.py                                  # everything, ~6 minutes
    python bench/soak.py --scenarios sustained --duration 60
    python bench/soak.py --scenarios fuzz-decode --fuzz-cases 100000 --atheris-seconds 120

Needs wrk (Debian: apt-get install wrk). Run it on an otherwise idle machine; the load average
is printed before and after. Exits 1 when a check fails (a 5xx, an error, a leak, a bad exit).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/soak.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench import fuzz_images  # noqa: E402
from bench.serve import (  # noqa: E402
    PHOTO,
    Server,
    free_port,
    loadavg,
    make_checkpoint,
    multipart,
)

MIXED_LUA = REPO / "bench" / "wrk_mixed.lua"
FAULTS = REPO / "tests" / "app" / "faults"
SCENARIOS = ("sustained", "overload", "shutdown", "slow-clients", "fuzz-decode", "fuzz-http",
             "worker-failure")
MiB = 1024 * 1024


# --- inputs -------------------------------------------------------------------------------------
def make_images(folder: Path) -> dict[str, Path]:
    from PIL import Image

    with Image.open(PHOTO) as photo:
        photo = photo.convert("RGB")
        png32 = folder / "cat32.png"
        photo.resize((32, 32), Image.Resampling.BILINEAR).save(png32, "PNG")
        jpeg = folder / "cat_1600x1066.jpg"
        photo.resize((1600, 1066), Image.Resampling.BICUBIC).save(jpeg, "JPEG", quality=90)
    return {"png32": png32, "photo": PHOTO, "jpeg": jpeg}


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
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
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
    return (f"{dict(counts)}, latency p50 {statistics.median(times):.1f} ms, "
            f"max {times[-1]:.1f} ms")


# --- scenarios ----------------------------------------------------------------------------------
def sustained(ctx: Context) -> None:
    args = ctx.args
    print(f"\n== sustained: {args.connections} connections, {args.duration:g} s of mixed "
          f"uploads (after {args.warmup:g} s warm-up)")
    with our_server(ctx, "sustained") as server:
        files = mix(ctx.images)
        if args.warmup:
            wrk(ctx, server.port, files, args.connections, args.warmup)
        sampler = RssSampler(server.proc.pid)
        sampler.start()
        load = wrk(ctx, server.port, files, args.connections, args.duration)
        samples = sampler.stop()
    print(f"  {load.line()}")
    step = max(1, len(samples) // 10)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    print("  memory of all server processes (RSS / PSS, MiB): "
          + ", ".join(f"{t:.0f}s {rss:.0f}/{pss:.0f}" for t, rss, pss in shown))
    growths = []
    for column, label in ((1, "RSS"), (2, "PSS")):
        head = statistics.median(row[column] for row in samples[:5])
        tail = statistics.median(row[column] for row in samples[-5:])
        growths.append(tail - head)
        print(f"  {label}: median of the first 5 s {head:.1f} MiB, of the last 5 s "
              f"{tail:.1f} MiB: growth {tail - head:+.1f} MiB ({(tail - head) / head:+.2%})")
        flat = tail - head <= max(10.0, 0.02 * head)
        ctx.check(flat, f"sustained: {label} grew")
    growth = growths[0]
    clean = load.error_count == 0 and load.non2xx == 0
    print(f"  memory flat after warm-up (growth under max(10 MiB, 2%)) "
          f"[{'ok' if not any('grew' in f for f in ctx.failures) else 'FAILED'}]")
    print(f"  zero errors and non-2xx [{ctx.check(clean, 'sustained: errors or non-2xx')}]; "
          f"p99 {load.p99_ms:.1f} ms")
    ctx.figures["sustained"] = {"load": vars(load), "rss_mb": samples, "growth_mb": growth}


def overload(ctx: Context) -> None:
    args = ctx.args
    queue = args.overload_queue
    print(f"\n== overload: {args.overload_connections} connections for "
          f"{args.overload_duration:g} s, queue capacity {queue} images per worker")
    env = {"CNN_SERVE_QUEUE_CAPACITY": str(queue)} if queue else {}
    with our_server(ctx, "overload", **env) as server:
        png_body, png_type = multipart(ctx.images["png32"])
        health = Prober(server.port, "GET", "/healthz")
        predict = Prober(server.port, "POST", "/predict", png_body, png_type)
        health.start()
        predict.start()
        load = wrk(ctx, server.port, mix(ctx.images), args.overload_connections,
                   args.overload_duration)
        health_results, predict_results = health.stop(), predict.stop()
        stopped = time.monotonic()

        def serves() -> bool:
            try:
                return request(server.port, "POST", "/predict", png_body, png_type)[0] == 200
            except OSError:
                return False

        recovered = wait_for(serves, 60)
        depths: collections.deque[int] = collections.deque(maxlen=6)

        def drained() -> bool:  # six probes in a row (both workers, most likely) see 0
            depths.append(json.loads(request(server.port, "GET", "/healthz")[2])["queue_depth"])
            return len(depths) == 6 and not any(depths)

        emptied = wait_for(drained, 60)
        after_stop = time.monotonic() - stopped
    answered_503 = load.by_status.get("503", 0)
    retry_ok = ctx.check(answered_503 > 0 and load.retry_after_503 == answered_503,
                         "overload: 503s without Retry-After (or none)")
    clean = ctx.check(load.error_count == 0 and load.non2xx == answered_503,
                      "overload: errors or other statuses")
    healthy = ctx.check(all(r[0] == "200" for r in health_results), "overload: /healthz not 200")
    print(f"  {load.line()}")
    print(f"  503s: {answered_503:,}, with Retry-After: {load.retry_after_503:,} [{retry_ok}]; "
          f"200s: {load.by_status.get('200', 0):,}; other non-2xx: "
          f"{load.non2xx - answered_503}; socket errors/timeouts: {load.error_count} [{clean}]")
    print(f"  /healthz probed every 0.1 s during it: {summary(health_results)} [{healthy}]")
    print(f"  /predict probed every 0.1 s: {summary(predict_results)}; the 503s: "
          f"{summary(predict_results, '503')}")
    ok = ctx.check(recovered is not None and emptied is not None, "overload: no recovery")
    rec = "never" if recovered is None else f"{recovered * 1000:.0f} ms"
    print(f"  after the load stopped: first 200 after {rec}; queue depth 0 on six /healthz "
          f"probes in a row {after_stop:.1f} s after [{ok}]")
    ctx.figures["overload"] = {"load": vars(load), "healthz": health_results,
                               "predict": predict_results, "recovered_s": recovered}


@dataclass
class Attempt:
    start: float
    sent: float | None = None
    end: float | None = None
    outcome: str = "pending"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers.get("connection", "").lower() == "close"


async def _shutdown_client(port: int, bodies: list[tuple[bytes, str]], attempts: list[Attempt],
                           signalled: asyncio.Event) -> None:
    n = 0
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            if signalled.is_set():
                attempts.append(Attempt(time.monotonic(), outcome="connection refused"))
                return
            await asyncio.sleep(0.01)
            continue
        try:
            while True:
                body, content_type = bodies[n % len(bodies)]
                n += 1
                attempt = Attempt(time.monotonic())
                attempts.append(attempt)
                writer.write(f"POST /predict HTTP/1.1\r\nHost: soak\r\nContent-Type: "
                             f"{content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                             + body)
                try:
                    await writer.drain()
                    attempt.sent = time.monotonic()
                    status, close = await _read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    attempt.end, attempt.outcome = time.monotonic(), (
                        "closed without an answer" if isinstance(exc, asyncio.IncompleteReadError)
                        else type(exc).__name__)
                    break
                attempt.end, attempt.outcome = time.monotonic(), str(status)
                if close:
                    break
        finally:
            writer.close()


async def _shutdown_run(ctx: Context, server: Server) -> dict[str, Any]:
    args = ctx.args
    bodies = [multipart(path) for path in mix(ctx.images)]
    attempts: list[Attempt] = []
    signalled = asyncio.Event()
    clients = [asyncio.ensure_future(_shutdown_client(server.port, bodies, attempts, signalled))
               for _ in range(args.shutdown_connections)]
    await asyncio.sleep(args.shutdown_after)
    sigterm_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    signalled.set()
    refused_at = None
    while refused_at is None and time.monotonic() - sigterm_at < 60:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()
            await asyncio.sleep(0.005)
        except ConnectionRefusedError:
            refused_at = time.monotonic()
    loop = asyncio.get_running_loop()
    code = await loop.run_in_executor(None, server.proc.wait, 120)
    exited_at = time.monotonic()
    await asyncio.wait(clients, timeout=30)
    for client in clients:
        client.cancel()
    in_flight = [a for a in attempts if a.start < sigterm_at and (a.end is None
                                                                  or a.end > sigterm_at)]
    after = [a for a in attempts if a.start >= sigterm_at]
    return {
        "exit_code": code, "exit_s": exited_at - sigterm_at,
        "refused_s": None if refused_at is None else refused_at - sigterm_at,
        "before": collections.Counter(a.outcome for a in attempts if a.end and
                                      a.end <= sigterm_at),
        "in_flight": collections.Counter(a.outcome for a in in_flight),
        "in_flight_sent": collections.Counter(a.outcome for a in in_flight if a.sent and
                                              a.sent <= sigterm_at),
        "after": collections.Counter(a.outcome for a in after),
        "slowest_in_flight_s": max((a.end - sigterm_at for a in in_flight if a.end),
                                   default=0.0),
    }


def shutdown(ctx: Context) -> None:
    args = ctx.args
    print(f"\n== shutdown: SIGTERM after {args.shutdown_after:g} s of load from "
          f"{args.shutdown_connections} keep-alive connections (mixed uploads)")
    with our_server(ctx, "shutdown") as server:
        result = asyncio.run(_shutdown_run(ctx, server))
    sent_ok = set(result["in_flight_sent"]) <= {"200"}
    print(f"  answered before SIGTERM: {dict(result['before'])}")
    print(f"  in flight at SIGTERM: {dict(result['in_flight'])}; of those fully sent before "
          f"it: {dict(result['in_flight_sent'])} "
          f"[{ctx.check(sent_ok, 'shutdown: an accepted request did not get 200')}]; the "
          f"last answered {result['slowest_in_flight_s'] * 1000:.0f} ms after SIGTERM")
    print(f"  started after SIGTERM: {dict(result['after'])}")
    refused = result["refused_s"]
    print(f"  new connections refused {refused * 1000:.0f} ms after SIGTERM" if refused
          is not None else "  new connections never refused")
    ctx.check(refused is not None, "shutdown: connections not refused")
    print(f"  exit status {result['exit_code']} after {result['exit_s']:.2f} s "
          f"[{ctx.check(result['exit_code'] == 0, 'shutdown: exit status not 0')}]")
    ctx.figures["shutdown"] = {k: dict(v) if isinstance(v, collections.Counter) else v
                               for k, v in result.items()}


def _trickle(port: int, head: bytes, drip: bytes, record: dict[str, Any]) -> None:
    """Send `head` at once, then `drip` a byte a second until the server hangs up."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(head)
            sock.settimeout(1.0)
            answer = b""
            for byte in drip:
                try:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                    if b"\r\n\r\n" in answer:
                        break
                except TimeoutError:
                    pass
                sock.sendall(bytes([byte]))
            record["answer"] = answer.split(b"\r\n", 1)[0].decode("latin-1") or "closed"
    except OSError as exc:
        record["answer"] = type(exc).__name__
    record["held_s"] = time.monotonic() - start


def _hang_ups(port: int, body: bytes, content_type: str, mid: str, stop: threading.Event,
              count: list[int]) -> None:
    head = (f"POST /predict HTTP/1.1\r\nHost: soak\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(head + (body[: len(body) // 2] if mid == "upload" else body))
            count[0] += 1
        except OSError:
            pass
        stop.wait(0.02)


def slow_clients(ctx: Context) -> None:
    args = ctx.args
    n = args.slow_clients
    print(f"\n== slow clients: {n} sending headers and {n} sending a body a byte a second, "
          f"then also clients hanging up mid-upload and mid-inference, against wrk at 32 "
          f"connections")
    with our_server(ctx, "slow") as server:
        png32 = [ctx.images["png32"]]
        before = wrk(ctx, server.port, png32, 32, args.slow_duration)
        rss_before = rss_mb(server.proc.pid)
        body, content_type = multipart(ctx.images["photo"])
        header_head = b"POST /predict HTTP/1.1\r\nHost: soak\r\nX-Slow: "
        body_head = (f"POST /predict HTTP/1.1\r\nHost: soak\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n").encode()
        records: dict[str, list[dict[str, Any]]] = {"headers": [], "body": []}
        tricklers, hangers = [], []
        for kind, head, drip in (("headers", header_head, b"a" * 600),
                                 ("body", body_head, body[:600])):
            for _ in range(n):
                record: dict[str, Any] = {}
                records[kind].append(record)
                tricklers.append(threading.Thread(target=_trickle, daemon=True,
                                                  args=(server.port, head, drip, record)))
        stop, hung_up = threading.Event(), {"upload": [0], "inference": [0]}
        for mid in hung_up:
            hangers.append(threading.Thread(target=_hang_ups, daemon=True, args=(
                server.port, body, content_type, mid, stop, hung_up[mid])))
        for thread in tricklers:
            thread.start()
        time.sleep(1.0)  # let them all connect
        during = wrk(ctx, server.port, png32, 32, args.slow_duration)
        for thread in hangers:
            thread.start()
        hanging = wrk(ctx, server.port, png32, 32, args.slow_duration)
        stop.set()
        for thread in tricklers + hangers:
            thread.join(120)
        after = wrk(ctx, server.port, png32, 32, min(5.0, args.slow_duration))
        rss_after = rss_mb(server.proc.pid)
        log = server.log.read_text(errors="replace")
    print(f"  wrk alone:                  {before.line()}")
    print(f"  wrk with the slow clients:  {during.line()}")
    print(f"  … and hang-ups (~100/s):    {hanging.line()}")
    print(f"  wrk afterwards:             {after.line()}")
    clean = all(x.error_count == 0 and x.non2xx == 0 for x in (before, during, hanging, after))
    ctx.check(clean, "slow clients: wrk saw errors")
    for kind, recs in records.items():
        held = sorted(r.get("held_s", float("nan")) for r in recs)
        answers = collections.Counter(r.get("answer", "?") for r in recs)
        print(f"  byte-a-second {kind}: cut off after {held[0]:.1f}–{held[-1]:.1f} s; "
              f"they got {dict(answers)}")
    logged = {code: log.count(f'"status":{code}') for code in (499, 408, 500)}
    unhandled = ctx.check("unhandled error" not in log, "slow clients: unhandled errors")
    print(f"  hang-ups: {hung_up['upload'][0]} mid-upload, {hung_up['inference'][0]} "
          f"mid-inference; access log: {logged[499]} × 499, {logged[408]} × 408, "
          f"{logged[500]} × 500, {log.count('unhandled error')} unhandled errors [{unhandled}]")
    grew = rss_after - rss_before
    print(f"  RSS {rss_before:.0f} → {rss_after:.0f} MiB ({grew:+.0f}) "
          f"[{ctx.check(grew < max(20.0, 0.05 * rss_before), 'slow clients: memory grew')}]")
    ctx.figures["slow_clients"] = {"before": vars(before), "during": vars(during),
                                   "hanging": vars(hanging), "after": vars(after),
                                   "records": records,
                                   "rss_mb": [rss_before, rss_after]}


def _fuzz_child(conn: Connection, seed: int, indices: list[int]) -> None:
    seeds = fuzz_images.make_seeds()
    names = sorted(seeds)
    for data in seeds.values():  # imports and first-use costs, before anything is timed
        fuzz_images.decode_outcome(data)
    baseline = _own_memory("VmRSS")
    for index in indices:
        name, data = fuzz_images.case(index, seed, names, seeds)
        conn.send(("start", index))
        started = time.perf_counter()
        try:
            outcome = fuzz_images.decode_outcome(data)
        except Exception as exc:  # a bug: what the service would answer with 500
            outcome = f"BUG {type(exc).__name__}: {str(exc)[:120]}"
        conn.send(("done", index, name, outcome, time.perf_counter() - started))
    conn.send(("peak", baseline, _own_memory("VmHWM")))


def _own_memory(field_name: str) -> float:
    found = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(),
                      re.M)
    return int(found.group(1)) / 1024 if found else 0.0


def fuzz_decode(ctx: Context) -> None:
    args = ctx.args
    procs = max(1, os.cpu_count() or 1)
    print(f"\n== fuzz-decode: {args.fuzz_cases:,} mutated files (seed {args.fuzz_seed}) in "
          f"{procs} child processes, {args.fuzz_timeout:g} s allowed per file")
    spawn = multiprocessing.get_context("spawn")
    outcomes: collections.Counter[str] = collections.Counter()
    by_format: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    bugs, hangs, peaks, slowest = [], [], [], (0.0, -1)
    todo = [list(range(k, args.fuzz_cases, procs)) for k in range(procs)]
    started = time.monotonic()
    while any(todo):
        children = {}
        for k, indices in enumerate(todo):
            if indices:
                parent, child = spawn.Pipe()
                proc = spawn.Process(target=_fuzz_child, args=(child, args.fuzz_seed, indices))
                proc.start()
                child.close()
                children[parent] = (k, proc, None, time.monotonic())
        while children:
            for conn in wait(list(children), timeout=1.0):
                k, proc, current, since = children[conn]
                try:
                    message = conn.recv()
                except EOFError:  # died without a word: a crash of the interpreter
                    bugs.append((current, "the decoding process died"))
                    del children[conn]
                    todo[k] = todo[k][todo[k].index(current) + 1:] if current in todo[k] else []
                    continue
                if message[0] == "start":
                    children[conn] = (k, proc, message[1], time.monotonic())
                elif message[0] == "done":
                    _, index, name, outcome, seconds = message
                    outcomes["bug" if outcome.startswith("BUG") else outcome] += 1
                    by_format[name.split("-")[0]][outcome.split(":")[0]] += 1
                    if outcome.startswith("BUG"):
                        bugs.append((index, f"{name}: {outcome}"))
                    slowest = max(slowest, (seconds, index))
                    todo[k] = todo[k][1:] if todo[k] and todo[k][0] == index else todo[k]
                    children[conn] = (k, proc, None, time.monotonic())
                else:
                    peaks.append(message[1:])
                    proc.join()
                    del children[conn]
            for conn, (k, proc, current, since) in list(children.items()):
                if current is not None and time.monotonic() - since > args.fuzz_timeout:
                    hangs.append(current)
                    proc.kill()
                    proc.join()
                    del children[conn]
                    todo[k] = todo[k][todo[k].index(current) + 1:]
    elapsed = time.monotonic() - started
    total = sum(outcomes.values())
    print(f"  {total:,} files in {elapsed:.0f} s ({total / elapsed:,.0f}/s): {dict(outcomes)}")
    for fmt, counts in sorted(by_format.items()):
        print(f"    {fmt:5} {dict(counts)}")
    base = max((b for b, _ in peaks), default=0.0)
    peak = max((p for _, p in peaks), default=0.0)
    print(f"  slowest file {slowest[0] * 1000:.0f} ms (case {slowest[1]}); RSS of a decoding "
          f"process {base:.0f} MiB after warm-up, {peak:.0f} MiB at its peak")
    print(f"  escaped exceptions (would be 500s): {len(bugs)} "
          f"[{ctx.check(not bugs, 'fuzz-decode: exceptions escaped')}]; hangs over "
          f"{args.fuzz_timeout:g} s: {len(hangs)} [{ctx.check(not hangs, 'fuzz-decode: hangs')}]")
    for index, what in bugs[:10]:
        print(f"    case {index}: {what}")
    ctx.figures["fuzz_decode"] = {"outcomes": dict(outcomes), "bugs": bugs, "hangs": hangs,
                                  "peak_rss_mb": peaks, "seconds": elapsed}
    if args.atheris_seconds > 0:
        _atheris(ctx)


def _atheris(ctx: Context) -> None:
    seconds = ctx.args.atheris_seconds
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("  atheris: not installed (pip install atheris); skipped")
        return
    work = ctx.tmp / "atheris"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fuzz_images.py"), f"-max_total_time={seconds}",
         "-print_final_stats=1", f"-artifact_prefix={work}/", f"-rss_limit_mb={4096}"],
        cwd=work, capture_output=True, text=True, check=False,
    )
    stats = dict(re.findall(r"^stat::(\w+):\s+(\S+)", done.stderr, re.M))
    cov = re.findall(r"cov: (\d+)", done.stderr)
    runs = int(stats.get("number_of_executed_units", 0))
    ok = ctx.check(done.returncode == 0, "fuzz-decode: atheris found a crash")
    print(f"  atheris, {seconds} s coverage-guided: {runs:,} inputs, coverage "
          f"{cov[-1] if cov else '?'} edges, peak RSS {stats.get('peak_rss_mb', '?')} MiB, "
          f"exit {done.returncode} [{ok}]")
    if done.returncode != 0:
        print("\n".join(done.stderr.splitlines()[-30:]))


def fuzz_http(ctx: Context) -> None:
    args = ctx.args
    clients = 8
    print(f"\n== fuzz-http: {args.fuzz_http_cases:,} mutated uploads through the server, "
          f"{clients} keep-alive connections")
    seeds = fuzz_images.make_seeds()
    names = sorted(seeds)
    statuses: collections.Counter[str] = collections.Counter()
    server_errors: list[tuple[int, str]] = []
    slowest = [0.0]
    lock = threading.Lock()
    with our_server(ctx, "fuzz-http") as server:
        sampler = RssSampler(server.proc.pid)
        sampler.start()

        def client(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            for index in range(k, args.fuzz_http_cases, clients):
                name, data = fuzz_images.case(index, args.fuzz_seed + 1, names, seeds)
                body, content_type = multipart_bytes(data)
                started = time.monotonic()
                try:
                    conn.request("POST", "/predict", body, {"Content-Type": content_type})
                    response = conn.getresponse()
                    text = response.read()
                    outcome = str(response.status)
                except (OSError, http.client.HTTPException) as exc:
                    outcome = type(exc).__name__
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                    text = b""
                seconds = time.monotonic() - started
                with lock:
                    statuses[outcome] += 1
                    slowest[0] = max(slowest[0], seconds)
                    if not outcome.startswith(("2", "4")):
                        server_errors.append((index, f"{name}: {outcome} {text[:200]!r}"))
                        (ctx.tmp / f"fuzz-http-{index}.bin").write_bytes(data)
            conn.close()

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        samples = sampler.stop()
        log = server.log.read_text(errors="replace")
    total = sum(statuses.values())
    print(f"  {total:,} uploads in {elapsed:.0f} s: {dict(sorted(statuses.items()))}")
    print(f"  5xx or transport errors: {len(server_errors)} "
          f"[{ctx.check(not server_errors, 'fuzz-http: 5xx or errors')}]; unhandled errors "
          f"logged: {log.count('unhandled error')}; slowest answer {slowest[0] * 1000:.0f} ms "
          f"[{ctx.check(slowest[0] < args.timeout, 'fuzz-http: an answer took too long')}]")
    rss = [row[1] for row in samples]
    print(f"  RSS of the server {rss[0]:.0f} → {rss[-1]:.0f} MiB, peak {max(rss):.0f} MiB")
    for index, what in server_errors[:10]:
        print(f"    case {index}: {what}")
    ctx.figures["fuzz_http"] = {"statuses": dict(statuses), "errors": server_errors,
                                "slowest_s": slowest[0], "rss_mb": samples}


def multipart_bytes(data: bytes) -> tuple[bytes, str]:
    boundary = "soakfuzzboundary7f3a"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="fuzz"\r\nContent-Type: application/octet-stream\r\n\r\n').encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def worker_failure(ctx: Context) -> None:
    print("\n== worker-failure: a worker process killed, then an inference thread hung")
    png_body, png_type = multipart(ctx.images["png32"])
    with our_server(ctx, "killed", CNN_SERVE_WORKERS="2") as server:
        prober = Prober(server.port, "POST", "/predict", png_body, png_type, interval_s=0.01)
        prober.start()
        time.sleep(1.0)
        victim = worker_pids(server)[0]
        ready = log_count(server, "ready: serving")
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: log_count(server, "ready: serving") > ready, 120)
        time.sleep(1.0)
        results = prober.stop()
    rec = "never" if replaced is None else f"{replaced:.1f} s"
    ok = ctx.check(replaced is not None, "worker-failure: not replaced")
    print(f"  SIGKILL worker [{victim}]: a fresh worker served {rec} later [{ok}]; /predict "
          f"every 10 ms on new connections meanwhile: {summary(results)}")
    with our_server(ctx, "hung", CNN_SERVE_WORKERS="2", CNN_SERVE_REQUEST_TIMEOUT_S="1",
                    PYTHONPATH=str(FAULTS)) as server:
        health = Prober(server.port, "GET", "/healthz", interval_s=0.05)
        predict = Prober(server.port, "POST", "/predict", png_body, png_type, interval_s=0.02)
        health.start()
        predict.start()
        time.sleep(1.0)
        hang_body, hang_type = multipart_bytes(_corner_png((1, 2, 3)))
        ready = log_count(server, "ready: serving")
        hang_status = request(server.port, "POST", "/predict", hang_body, hang_type)[0]
        replaced = wait_for(lambda: log_count(server, "ready: serving") > ready, 120)
        time.sleep(1.0)
        health_results, predict_results = health.stop(), predict.stop()
        exits = re.findall(r"exited with (-?\d+); starting a new one",
                           server.log.read_text(errors="replace"))
    rec = "never" if replaced is None else f"{replaced:.1f} s"
    ok = ctx.check(replaced is not None and exits == ["70"],
                   "worker-failure: hung worker not replaced")
    print(f"  hung inference thread (request timeout 1 s, so stuck after 2 s): the hung "
          f"request got {hang_status}; the worker exited with {exits}, a fresh one served "
          f"{rec} after the request [{ok}]")
    print(f"  meanwhile /healthz every 50 ms: {summary(health_results)}")
    print(f"  meanwhile /predict every 20 ms: {summary(predict_results)}")
    ctx.figures["worker_failure"] = {"kill_replaced_s": replaced, "hang_exits": exits}


def _corner_png(rgb: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), rgb).save(buf, "PNG")
    return buf.getvalue()


RUNNERS: dict[str, Callable[[Context], None]] = {
    "sustained": sustained, "overload": overload, "shutdown": shutdown,
    "slow-clients": slow_clients, "fuzz-decode": fuzz_decode, "fuzz-http": fuzz_http,
    "worker-failure": worker_failure,
}


# --- CLI ----------------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Reliability soak of the service: sustained load, overload, shutdown, slow "
                    "clients, fuzzed uploads, worker failure. Prints the figures.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                        metavar="NAME", help=f"which to run, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="sustained: seconds of measured load")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="sustained: seconds of unmeasured load first")
    parser.add_argument("--connections", type=int, default=64, help="sustained: connections")
    parser.add_argument("--overload-connections", type=int, default=256,
                        help="overload: wrk connections")
    parser.add_argument("--overload-queue", type=int, default=16,
                        help="overload: CNN_SERVE_QUEUE_CAPACITY per worker (0: the default)")
    parser.add_argument("--overload-duration", type=float, default=15.0,
                        help="overload: seconds of load")
    parser.add_argument("--shutdown-after", type=float, default=3.0,
                        help="shutdown: seconds of load before SIGTERM")
    parser.add_argument("--shutdown-connections", type=int, default=32,
                        help="shutdown: client connections")
    parser.add_argument("--slow-clients", type=int, default=32,
                        help="slow-clients: byte-a-second connections of each kind")
    parser.add_argument("--slow-duration", type=float, default=10.0,
                        help="slow-clients: seconds of each wrk measurement")
    parser.add_argument("--fuzz-cases", type=int, default=20_000,
                        help="fuzz-decode: mutated files")
    parser.add_argument("--fuzz-http-cases", type=int, default=3_000,
                        help="fuzz-http: mutated uploads")
    parser.add_argument("--fuzz-seed", type=int, default=0,
                        help="fuzzing seed; a case is replayable from (seed, index)")
    parser.add_argument("--fuzz-timeout", type=float, default=10.0,
                        help="fuzz-decode: seconds a file may take before it counts as a hang")
    parser.add_argument("--atheris-seconds", type=int, default=0,
                        help="fuzz-decode: also run atheris this long (0: no)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to serve; None: random weights in a temporary folder")
    parser.add_argument("--wrk", default="wrk", help="the wrk executable")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a request may take before wrk counts it as an error")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the figures to this file as JSON")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the server logs and fuzz artefacts, and say where")
    return parser


def main(args: argparse.Namespace) -> int:
    if shutil.which(args.wrk) is None and set(args.scenarios) & {
            "sustained", "overload", "slow-clients"}:
        print(f"error: {args.wrk!r} not found; install it (Debian: apt-get install wrk)",
              file=sys.stderr)
        return 2
    if args.duration <= 0 or args.fuzz_cases < 0 or args.fuzz_http_cases < 0:
        print("error: --duration must be > 0 and the case counts >= 0", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        images = make_images(tmp)
        checkpoint = args.checkpoint or make_checkpoint(tmp / "random_tutorial_cnn.pt")
        ctx = Context(args, tmp, checkpoint, images)
        print(f"cpus {os.cpu_count()}, load average {loadavg()} (before); checkpoint "
              f"{checkpoint}; scenarios: {' '.join(args.scenarios)}")
        for name in SCENARIOS:
            if name in args.scenarios:
                RUNNERS[name](ctx)
        print(f"\nload average {loadavg()} (after)")
        if ctx.failures:
            print("FAILED checks: " + "; ".join(ctx.failures))
        else:
            print("all checks passed")
        if args.json:
            args.json.write_text(json.dumps(ctx.figures, indent=1, default=str))
        return 1 if ctx.failures else 0
    finally:
        if args.keep_logs:
            print(f"logs and artefacts in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
