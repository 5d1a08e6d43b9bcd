"""bench/soak.py's fuzzing scenarios: mutated files through the decode path in child processes
(with hang and crash detection, and atheris when installed), and through the real server."""

from __future__ import annotations

import collections
import http.client
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

from bench import fuzz_images
from bench.soak_harness import REPO, Context, RssSampler, multipart_bytes, our_server


def _fuzz_child(conn: Connection, seed: int, indices: list[int]) -> None:
    # libtiff and libjpeg print a warning per damaged file straight to fd 2, burying the
    # figures; every outcome comes back through the pipe, and a crash shows as EOF there.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
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
