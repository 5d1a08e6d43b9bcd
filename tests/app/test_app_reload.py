"""Model reload (app/reload.py): the checkpoint at MODEL_PATH loaded again and swapped in
between batches, a bad file refused with one line while the old model goes on serving.

In-process apps (TestClient) run their lifespan outside the main thread, where no signal
handler can be installed: these tests ask the app's reloader directly, on the app's event
loop; test_reload_on_sighup_* send the signal itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from app_support import ModelGate, png, save_random_checkpoint, settings_for, wait_until
from fastapi.testclient import TestClient
from live_server import PYTHON_M_APP, UVICORN, Server, poll
from prometheus_client.parser import text_string_to_metric_families
from test_app_lifespan import BAD_CHECKPOINTS

from app.inference.predictor import SHA_PREFIX
from app.inference.service import InferenceService
from app.lifespan import _limits
from app.observability import Metrics
from app.reload import ModelReloader, check_replaceable, load_model
from models.checkpoint import CheckpointError


@pytest.fixture
def model_path(tmp_path: Path, checkpoint: Path) -> Path:
    """MODEL_PATH, holding the session's random checkpoint (model A) to begin with."""
    path = tmp_path / "served" / "model.pt"
    path.parent.mkdir()
    shutil.copy(checkpoint, path)
    return path


@pytest.fixture
def model_b(tmp_path: Path) -> Path:
    return save_random_checkpoint(tmp_path / "model_b.pt", seed=1)


def put(source: Path, model_path: Path) -> None:
    """Replace the file at MODEL_PATH atomically, as a rollout should."""
    staged = model_path.with_suffix(".staged")
    shutil.copy(source, staged)
    os.replace(staged, model_path)


def reload(client: TestClient) -> bool:
    return client.portal.call(client.app.state.reloader.reload)


def post(client: TestClient):
    return client.post("/predict", files={"file": ("x.png", png(), "image/png")})


def sha_of(client: TestClient) -> str:
    return client.app.state.service.predictor.sha256


def reloads(client: TestClient, result: str) -> float:
    value = client.app.state.metrics.registry.get_sample_value(
        "cnn_serve_model_reloads_total", {"result": result})
    return value or 0.0


def test_reload_lets_the_batch_in_the_model_finish_and_runs_the_next_on_the_new_model(
    make_client: Callable[..., TestClient], model_path: Path, model_b: Path,
) -> None:
    client = make_client(model_path)
    service: InferenceService = client.app.state.service
    old_sha = sha_of(client)
    gate = ModelGate(service.predictor.model)
    gate.close()
    try:
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(post, client)
            wait_until(gate.entered.is_set, what="a request to reach the model")
            put(model_b, model_path)
            # Loaded and warmed up while the inference thread is held: it is another thread.
            assert reload(client) is True
            assert sha_of(client) != old_sha
            queued = pool.submit(post, client)
            wait_until(lambda: service.batcher.queued == 1, what="a request queued behind")
            gate.open()
            first, second = held.result(), queued.result()
    finally:
        gate.remove()
    assert first.status_code == second.status_code == 200
    assert first.json()["model"]["sha256"] == old_sha[:SHA_PREFIX]  # its batch had started
    assert second.json()["model"]["sha256"] == sha_of(client)[:SHA_PREFIX]
    assert gate.sizes == [1]  # the old model's hook saw only the held batch
    assert gate.threads == ["inference_0"]


def test_reload_shows_the_new_model_on_model_healthz_and_metrics(
    make_client: Callable[..., TestClient], model_path: Path, model_b: Path,
    app_logs: list[logging.LogRecord],
) -> None:
    client = make_client(model_path)
    old_sha = sha_of(client)
    put(model_b, model_path)
    assert reload(client) is True
    new_sha = sha_of(client)
    assert client.get("/model").json()["sha256"] == new_sha
    assert client.get("/healthz").json()["model"]["sha256"] == new_sha[:SHA_PREFIX]
    assert post(client).json()["model"]["sha256"] == new_sha[:SHA_PREFIX]
    assert (reloads(client, "ok"), reloads(client, "failed")) == (1.0, 0.0)
    registry = client.app.state.metrics.registry
    info = {sha: registry.get_sample_value("cnn_serve_model_info", {
        "name": "model", "arch": "tutorial_cnn", "sha256": sha[:SHA_PREFIX], "device": "cpu"})
        for sha in (old_sha, new_sha)}
    assert info == {old_sha: 0.0, new_sha: 1.0}
    [line] = [r.getMessage() for r in app_logs if r.getMessage().startswith("reloaded")]
    assert new_sha[:SHA_PREFIX] in line and old_sha[:SHA_PREFIX] in line


def test_the_old_model_is_freed_after_a_reload_even_with_the_collector_frozen(
    make_client: Callable[..., TestClient], model_path: Path, model_b: Path,
) -> None:
    # Frozen objects are never collected, only freed by reference counting: nothing may
    # hold the old model (the lifespan's own variable did) or it stays for the process's life.
    client = make_client(model_path, gc_freeze=True)
    assert post(client).status_code == 200
    old = weakref.ref(client.app.state.service.predictor.model)
    put(model_b, model_path)
    assert reload(client) is True
    assert post(client).status_code == 200
    assert old() is None


@pytest.mark.parametrize(("make", "reason"), BAD_CHECKPOINTS, ids=[m.__name__ for m, _ in
                                                                    BAD_CHECKPOINTS])
def test_reload_refuses_an_unusable_checkpoint_with_one_line_and_keeps_the_old_model(
    make_client: Callable[..., TestClient], model_path: Path, tmp_path: Path,
    app_logs: list[logging.LogRecord], make: Callable[[Path], Path], reason: str,
) -> None:
    client = make_client(model_path)
    old_sha = sha_of(client)
    bad = make(tmp_path)
    if bad.exists():
        put(bad, model_path)
    else:
        model_path.unlink()
    app_logs.clear()
    assert reload(client) is False
    [line] = [r for r in app_logs if r.levelno >= logging.WARNING]
    assert str(model_path) in line.getMessage() and reason in line.getMessage()
    assert old_sha[:SHA_PREFIX] in line.getMessage()  # what goes on serving
    assert sha_of(client) == old_sha
    answer = post(client)
    assert answer.status_code == 200 and answer.json()["model"]["sha256"] == old_sha[:12]
    assert client.get("/healthz").status_code == 200
    assert (reloads(client, "ok"), reloads(client, "failed")) == (0.0, 1.0)
    assert not (tmp_path / "pwned").exists()


def test_a_model_with_another_input_size_cannot_take_over_while_serving() -> None:
    current = SimpleNamespace(input_size=32, path="/models/a.pt")
    new = SimpleNamespace(input_size=64, path="/models/b.pt")
    with pytest.raises(CheckpointError, match="input size 64px differs from the served "
                                              "model's 32px; restart the service"):
        check_replaceable(current, new)  # type: ignore[arg-type]
    check_replaceable(current, SimpleNamespace(input_size=32, path="c"))  # type: ignore[arg-type]


def test_the_model_is_loaded_with_the_idle_fast_path_timed_only_when_it_is_on(
    model_path: Path,
) -> None:
    predictor, one_image_s = load_model(settings_for(model_path, inline_when_idle_max_ms=5))
    assert one_image_s is not None and one_image_s > 0
    assert predictor.path == str(model_path)
    assert load_model(settings_for(model_path))[1] is None  # settings_for: fast path off


def test_a_swap_turns_the_idle_fast_path_on_or_off_by_the_new_models_timing(
    make_client: Callable[..., TestClient], model_b: Path,
) -> None:
    client = make_client(inline_when_idle_max_ms=50)
    service: InferenceService = client.app.state.service
    new, _ = load_model(settings_for(model_b))
    gate = ModelGate(new.model)
    try:
        for one_image_s, on_the_loop in ((1.0, False), (0.001, True)):
            client.portal.call(service.swap, new, one_image_s)
            assert service.inline_when_idle is on_the_loop
            gate.threads.clear()
            assert post(client).status_code == 200
            assert [not name.startswith("inference") for name in gate.threads] == [on_the_loop]
    finally:
        gate.remove()


def test_sighups_during_startup_and_during_a_reload_are_each_followed_by_one_reload(
    model_path: Path, model_b: Path,
) -> None:
    settings = settings_for(model_path)

    async def scenario() -> tuple[float, str]:
        metrics = Metrics()
        reloader = ModelReloader(settings, metrics)
        reloader.request()  # during startup, possibly after the file was read: remembered
        reloader.request()
        predictor, one_image_s = await asyncio.to_thread(load_model, settings)
        service = InferenceService(predictor, _limits(settings), one_image_s=one_image_s)
        service.start()
        put(model_b, model_path)
        reloader.serve(service)  # the one asked for during startup starts
        await asyncio.sleep(0)  # … and is loading now
        reloader.request()
        reloader.request()
        await reloader.settled()
        await reloader.close()
        await service.stop()
        ok = metrics.registry.get_sample_value("cnn_serve_model_reloads_total",
                                               {"result": "ok"})
        return ok or 0.0, service.predictor.sha256

    ok, sha = asyncio.run(scenario())
    assert ok == 2.0  # not 4: the requests that came while one was pending are one
    assert sha == load_model(settings)[0].sha256


def test_reload_on_sighup_in_the_main_thread_and_the_handler_is_put_back(
    model_path: Path, model_b: Path,
) -> None:
    settings = settings_for(model_path)
    before = signal.getsignal(signal.SIGHUP)

    async def scenario() -> str:
        reloader = ModelReloader(settings, Metrics())
        reloader.listen()
        predictor, _ = await asyncio.to_thread(load_model, settings)
        service = InferenceService(predictor, _limits(settings))
        service.start()
        reloader.serve(service)
        put(model_b, model_path)
        os.kill(os.getpid(), signal.SIGHUP)
        async with asyncio.timeout(30):
            while service.predictor is predictor:  # the handler runs on the loop, soon
                await asyncio.sleep(0.01)
        await reloader.close()
        await service.stop()
        return service.predictor.sha256

    sha = asyncio.run(scenario())
    assert sha == load_model(settings)[0].sha256
    assert signal.getsignal(signal.SIGHUP) == before


# --- a real server: SIGHUP from outside -------------------------------------------------------
def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.url}/metrics", headers={"Connection": "close"}).text
    return {(x.name, tuple(sorted(x.labels.items()))): x.value
            for family in text_string_to_metric_families(text) for x in family.samples}


def live_reloads(server: Server, result: str) -> float:
    return scrape(server).get(("cnn_serve_model_reloads_total", (("result", result),)), 0.0)


def served_shas(server: Server, connections: int) -> set[str]:
    """/model on that many new connections: dealt to the workers in turn, so each is asked."""
    return {httpx.get(f"{server.url}/model", headers={"Connection": "close"}).json()["sha256"]
            for _ in range(connections)}


def model_info(server: Server) -> dict[str, float]:
    return {dict(labels)["sha256"]: value for (name, labels), value in scrape(server).items()
            if name == "cnn_serve_model_info"}


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "workers"), [(UVICORN, 1), (PYTHON_M_APP, 2)],
                         ids=["uvicorn", "python-m-app-2-workers"])
def test_reload_on_sighup_reaches_every_worker_and_a_bad_file_changes_nothing(
    model_path: Path, model_b: Path, argv: list[str], workers: int,
) -> None:
    old = hashlib.sha256(model_path.read_bytes()).hexdigest()
    new = hashlib.sha256(model_b.read_bytes()).hexdigest()
    server = Server(model_path, argv, CNN_SERVE_WORKERS=str(workers))
    try:
        server.wait_healthy()
        server.wait_for_log("ready: serving", count=workers)
        staged = model_path.with_suffix(".staged")
        staged.write_bytes(b"not a checkpoint at all")
        os.replace(staged, model_path)
        server.proc.send_signal(signal.SIGHUP)
        poll(lambda: live_reloads(server, "failed") == workers, 60, "the bad file refused")
        assert served_shas(server, 2 * workers) == {old}
        put(model_b, model_path)
        server.proc.send_signal(signal.SIGHUP)
        poll(lambda: live_reloads(server, "ok") == workers, 60, "every worker to reload")
        assert served_shas(server, 2 * workers) == {new}
        assert model_info(server) == {old[:SHA_PREFIX]: 0.0, new[:SHA_PREFIX]: 1.0}
        assert httpx.post(f"{server.url}/predict", files={"file": ("x.png", png())}
                          ).json()["model"]["sha256"] == new[:SHA_PREFIX]
        assert server.proc.poll() is None  # SIGHUP never stops the server
        log = server.drain_log()
        refused = [line for line in log.splitlines() if "reload refused" in line]
        assert len(refused) == workers and all(str(model_path) in line for line in refused)
        assert log.count('"message":"reloaded: serving') == workers
        assert "starting a new one" not in log  # no worker died of it
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) in (0, -signal.SIGTERM)  # plain uvicorn re-raises it
    finally:
        server.close()
