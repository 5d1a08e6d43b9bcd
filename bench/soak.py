"""Reliability soak: the long versions of the service's reliability tests, with figures.

Each scenario starts our service (`python -m app`, as deployed) on a free port with a
random-weights checkpoint (or --checkpoint), does its worst to it, and prints what happened:

  sustained       --duration s at --connections connections of mixed uploads (32×32 PNGs, the
                  456×336 EXIF photo PNG, a 1600×1066 JPEG), driven by wrk: req/s, p50/p99, errors,
                  non-2xx; the RSS of all server processes every second, and its growth after
                  the warm-up.
  overload        --overload-connections connections against a queue of --overload-queue images
                  per worker: 200s, 503s (and how many carry Retry-After), errors; /healthz and
                  /predict probed alongside; how long until a request succeeds once it stops.
  shutdown        SIGTERM during load: what the requests in flight got, how soon new connections
                  were refused, the exit status and how long the exit took.
  stops           --stops times: start, 20 predictions, SIGTERM; every exit status must be 0
                  (a crash while the interpreter exits shows only over many stops).
  slow-clients    byte-a-second uploads (headers, and bodies) plus clients hanging up mid-upload
                  and mid-inference, while wrk measures everyone else; when and how the slow
                  ones were cut off, 408/499 counts, RSS.
  fuzz-decode     --fuzz-cases mutated PNG/JPEG/GIF/WebP/BMP/TIFF files through the decode path
                  in child processes: outcomes, escaped exceptions (bugs), hangs, peak RSS.
                  --atheris-seconds adds a coverage-guided atheris run.
  fuzz-http       --fuzz-http-cases mutated uploads through the real server: statuses (a 5xx is
                  a bug), slowest answer, RSS.
  worker-failure  a worker process killed with SIGKILL, and a model call hung (injected
                  with tests/app/faults): how long until a fresh worker serves, what requests
                  got meanwhile.
  rollout         --rollout-connections connections of /predict while the file at MODEL_PATH
                  is swapped --rollouts times between two checkpoints (os.replace + SIGHUP),
                  each swap awaited on every worker: statuses, errors, which model answered.

    python bench/soak.py                                  # everything, ~6 minutes
    python bench/soak.py --scenarios stops --stops 40
    python bench/soak.py --scenarios sustained --duration 60
    python bench/soak.py --scenarios rollout --rollouts 10
    python bench/soak.py --scenarios fuzz-decode --fuzz-cases 100000 --atheris-seconds 120

Needs wrk (Debian: apt-get install wrk). Run it on an otherwise idle machine; the load average
is printed before and after. Exits 1 when a check fails (a 5xx, an error, a leak, a bad exit).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/soak.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.serve import Server, loadavg, make_checkpoint, multipart  # noqa: E402
from bench.soak_fuzz import fuzz_decode, fuzz_http  # noqa: E402
from bench.soak_harness import (  # noqa: E402
    FAULTS,
    MIXED_LUA,
    Context,
    Prober,
    RssSampler,
    log_count,
    make_images,
    mix,
    multipart_bytes,
    our_server,
    request,
    rss_mb,
    summary,
    wait_for,
    worker_pids,
    wrk,
)
from bench.soak_rollout import rollout  # noqa: E402

# A connection refused, or reset: the listening socket closed in the middle of its handshake
# (on loopback the whole handshake runs inside connect()). Either way the server said no.
REFUSED = (ConnectionRefusedError, ConnectionResetError)
STOP_REQUESTS = 20  # stops: predictions per server before its SIGTERM
SCENARIOS = ("sustained", "overload", "shutdown", "stops", "slow-clients", "fuzz-decode",
             "fuzz-http", "worker-failure", "rollout")
__all__ = ["FAULTS", "MIXED_LUA", "SCENARIOS", "Context", "get_args_parser", "main",
           "make_images", "mix", "summary"]


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
        except REFUSED:
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
        except REFUSED:
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


def stops(ctx: Context) -> None:
    """Stopping is not only the one SIGTERM above: a worker that crashes as its interpreter
    exits (once 1 stop in 10 here: SIGABRT from libtorch, a daemon thread freeing the model)
    shows only over many stops."""
    args = ctx.args
    print(f"\n== stops: {args.stops} × (start, {STOP_REQUESTS} predictions, SIGTERM), "
          "every exit status")
    body, content_type = multipart(ctx.images["png32"])
    statuses: collections.Counter[int] = collections.Counter()
    answers: collections.Counter[int] = collections.Counter()
    unclean_workers = 0
    for i in range(args.stops):
        with our_server(ctx, f"stops-{i}") as server:
            for _ in range(STOP_REQUESTS):
                answers[request(server.port, "POST", "/predict", body, content_type)[0]] += 1
            server.proc.send_signal(signal.SIGTERM)
            statuses[server.proc.wait(60)] += 1
            unclean_workers += log_count(server, "while stopping")  # the supervisor's error
    clean = set(statuses) == {0} and set(answers) == {200}
    print(f"  answers {dict(answers)}; supervisor exit statuses {dict(statuses)}; "
          f"workers that exited unclean while stopping: {unclean_workers} "
          f"[{ctx.check(clean, 'stops: a stop was not clean')}]")
    ctx.figures["stops"] = {"exit_statuses": dict(statuses), "answers": dict(answers),
                            "unclean_workers": unclean_workers}


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


def worker_failure(ctx: Context) -> None:
    print("\n== worker-failure: a worker process killed, then a model call hung")
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
        try:
            hang_status: int | str = request(server.port, "POST", "/predict", hang_body,
                                             hang_type)[0]
        except OSError as exc:  # hung on the idle fast path: the event loop is held, no 504
            hang_status = f"no answer ({type(exc).__name__})"
        replaced = wait_for(lambda: log_count(server, "ready: serving") > ready, 120)
        time.sleep(1.0)
        health_results, predict_results = health.stop(), predict.stop()
        exits = re.findall(r"exited with (-?\d+); starting a new one",
                           server.log.read_text(errors="replace"))
    rec = "never" if replaced is None else f"{replaced:.1f} s"
    ok = ctx.check(replaced is not None and exits == ["70"],
                   "worker-failure: hung worker not replaced")
    print(f"  hung model call (stuck after 2 × the 1 s request timeout in the inference "
          f"thread, after 1 s on the event loop's idle fast path): the hung "
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
    "sustained": sustained, "overload": overload, "shutdown": shutdown, "stops": stops,
    "slow-clients": slow_clients, "fuzz-decode": fuzz_decode, "fuzz-http": fuzz_http,
    "worker-failure": worker_failure, "rollout": rollout,
}


# --- CLI ----------------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Reliability soak of the service: sustained load, overload, shutdown, slow "
                    "clients, fuzzed uploads, worker failure, model rollout. Prints the figures.",
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
    parser.add_argument("--stops", type=int, default=10,
                        help="stops: how many times to start and stop a server")
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
    parser.add_argument("--rollouts", type=int, default=10,
                        help="rollout: model swaps (os.replace + SIGHUP)")
    parser.add_argument("--rollout-connections", type=int, default=32,
                        help="rollout: keep-alive connections posting /predict")
    parser.add_argument("--rollout-dwell", type=float, default=1.0,
                        help="rollout: seconds of load on each model, once all workers serve it")
    parser.add_argument("--rollout-workers", type=int, default=2,
                        help="rollout: CNN_SERVE_WORKERS")
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
