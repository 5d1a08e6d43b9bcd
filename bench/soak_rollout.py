"""bench/soak.py's rollout scenario: the model swapped under load, with SIGHUP (app/reload.py).

--rollout-connections keep-alive connections post a 32×32 PNG to /predict without pause, while
the file at MODEL_PATH is replaced (os.replace) by the other of two checkpoints and the
supervisor gets SIGHUP, --rollouts times. Each swap is awaited until every worker has reloaded
(cnn_serve_model_reloads_total and cnn_serve_model_info on /metrics), then the new model serves
for --rollout-dwell s before the next. Every answer must be a 2xx naming one of the two models
(`model.sha256`), with no connection error and no refused reload. `--rollouts 0
--rollout-dwell 13` is the same load without a swap, to compare with.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import shutil
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from prometheus_client.parser import text_string_to_metric_families

from bench.serve import multipart
from bench.soak_harness import Context, log_count, our_server, request, wait_for

SHA_PREFIX = 12  # what /predict shows of a checkpoint's sha256 (app/inference/predictor.py)


@dataclass
class Tally:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    shas: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)


def variant(source: Path, path: Path) -> Path:
    """A second checkpoint of the same architecture and input size: `source`'s weights, each
    nudged by a little noise, and a note in its meta, so its sha256 differs."""
    from models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(source)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 1e-3)
    loaded.meta.data = {**loaded.meta.data, "variant": "bench/soak_rollout.py"}
    save_checkpoint(path, loaded.model, loaded.meta)
    return path


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = request(port, "GET", "/metrics")[2].decode()
    return {(x.name, tuple(sorted(x.labels.items()))): x.value
            for family in text_string_to_metric_families(text) for x in family.samples}


def reload_count(samples: dict, result: str) -> float:
    return samples.get(("cnn_serve_model_reloads_total", (("result", result),)), 0.0)


def served_models(samples: dict) -> set[str]:
    """The sha256 prefixes some live worker serves (cnn_serve_model_info is 1)."""
    return {dict(labels)["sha256"] for (name, labels), value in samples.items()
            if name == "cnn_serve_model_info" and value == 1}


def _swaps(port: int, pid: int, served: Path, models: list[Path], workers: int, rounds: int,
           dwell_s: float) -> list[float | None]:
    """Swap MODEL_PATH `rounds` times; seconds from each SIGHUP until every worker serves the
    new model (None: not within 120 s, and no more swaps)."""
    took: list[float | None] = []
    for i in range(rounds):
        target = models[(i + 1) % 2]
        sha = hashlib.sha256(target.read_bytes()).hexdigest()[:SHA_PREFIX]
        staged = served.with_suffix(".staged")
        shutil.copy(target, staged)
        os.replace(staged, served)
        os.kill(pid, signal.SIGHUP)

        def reloaded(expected: int = workers * (i + 1), sha: str = sha) -> bool:
            samples = _metrics(port)
            return reload_count(samples, "ok") >= expected and served_models(samples) == {sha}

        took.append(wait_for(reloaded, 120))
        if took[-1] is None or reload_count(_metrics(port), "failed"):
            break
        time.sleep(dwell_s)  # serve on this model a while: the time measured, not a wait
    return took


async def _read(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers.get("connection", "").lower() == "close", body


async def _client(port: int, message: bytes, timeout_s: float, stop: asyncio.Event,
                  tally: Tally) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            tally.errors[f"connect: {type(exc).__name__}"] += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while not stop.is_set():
                started = time.monotonic()
                writer.write(message)
                status, close, body = await asyncio.wait_for(_read(reader), timeout_s)
                tally.latencies.append(time.monotonic() - started)
                tally.statuses[status] += 1
                if 200 <= status < 300:
                    tally.shas[json.loads(body)["model"]["sha256"]] += 1
                if close:
                    break
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
        finally:
            writer.close()


async def _under_load(ctx: Context, port: int, pid: int, served: Path, models: list[Path],
                      workers: int) -> tuple[Tally, list[float | None], float]:
    args = ctx.args
    body, content_type = multipart(ctx.images["png32"])
    message = (f"POST /predict HTTP/1.1\r\nHost: soak\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    tally, stop = Tally(), asyncio.Event()
    clients = [asyncio.ensure_future(_client(port, message, args.timeout, stop, tally))
               for _ in range(args.rollout_connections)]
    started = time.monotonic()
    await asyncio.sleep(args.rollout_dwell)  # load on the first model, too
    took = await asyncio.to_thread(_swaps, port, pid, served, models, workers, args.rollouts,
                                   args.rollout_dwell)
    stop.set()
    await asyncio.wait(clients, timeout=args.timeout + 5)
    for client in clients:
        client.cancel()
    return tally, took, time.monotonic() - started


def rollout(ctx: Context) -> None:
    args = ctx.args
    workers = args.rollout_workers
    print(f"\n== rollout: {args.rollout_connections} connections of /predict (32×32 PNG) "
          f"while MODEL_PATH is swapped {args.rollouts} times between two checkpoints "
          f"(os.replace + SIGHUP), {workers} workers, {args.rollout_dwell:g} s on each model")
    folder = ctx.tmp / "rollout"
    folder.mkdir(exist_ok=True)
    models = [ctx.checkpoint, variant(ctx.checkpoint, folder / "variant.pt")]
    shas = [hashlib.sha256(m.read_bytes()).hexdigest()[:SHA_PREFIX] for m in models]
    served = folder / "model.pt"
    shutil.copy(models[0], served)
    with our_server(ctx, "rollout", MODEL_PATH=str(served),
                    CNN_SERVE_WORKERS=str(workers)) as server:
        tally, took, seconds = asyncio.run(
            _under_load(ctx, server.port, server.proc.pid, served, models, workers))
        samples = _metrics(server.port)
        restarts = log_count(server, "starting a new one")
        refused = log_count(server, "reload refused")
    answers = sum(tally.statuses.values())
    times = sorted(t * 1000 for t in tally.latencies) or [float("nan")]
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    non2xx = sum(n for status, n in tally.statuses.items() if not 200 <= status < 300)
    clean = ctx.check(non2xx == 0 and not tally.errors, "rollout: non-2xx or errors")
    print(f"  {answers:,} answers in {seconds:.1f} s = {answers / seconds:,.1f}/s; p50 "
          f"{statistics.median(times):.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.0f} ms; "
          f"statuses {dict(tally.statuses)}; errors {dict(tally.errors) or 'none'} [{clean}]")
    others = {sha: n for sha, n in tally.shas.items() if sha not in shas}
    named = ctx.check(not others and all(tally.shas[s] for s in shas[:1 + (args.rollouts > 0)]),
                      "rollout: an answer named another model (or a model never answered)")
    print("  model.sha256 of the answers: "
          + ", ".join(f"{sha} {tally.shas[sha]:,}" for sha in shas)
          + f"; any other: {others or 'none'} [{named}]")
    done = [t for t in took if t is not None]
    swapped = ctx.check(len(done) == args.rollouts, "rollout: a swap did not reach every worker")
    ok, failed = reload_count(samples, "ok"), reload_count(samples, "failed")
    counted = ctx.check(ok == workers * args.rollouts and failed == 0 and refused == 0
                        and restarts == 0, "rollout: reloads miscounted, refused or a restart")
    spread = (f"median {statistics.median(done):.2f} s, max {max(done):.2f} s" if done
              else "none")
    print(f"  swaps that reached every worker: {len(done)}/{args.rollouts}, SIGHUP to all "
          f"reloaded {spread} [{swapped}]; cnn_serve_model_reloads_total ok {ok:g}, failed "
          f"{failed:g}; refused in the log {refused}; workers restarted {restarts} [{counted}]")
    ctx.figures["rollout"] = {"statuses": dict(tally.statuses), "errors": dict(tally.errors),
                              "shas": dict(tally.shas), "swap_s": took, "answers": answers,
                              "seconds": seconds, "p50_ms": statistics.median(times),
                              "p99_ms": p99, "reloads": {"ok": ok, "failed": failed}}
