"""`python -m app` (app/__main__.py): uvicorn configured from the settings."""

from __future__ import annotations

import pytest
import uvicorn

import app.__main__ as app_main
import app.settings as settings_module
from app.__main__ import main
from app.server import workers
from app.server.protocol import HeaderDeadlineProtocol


def check_options(options: dict, header_timeout_s: float = 10.0) -> None:
    """The uvicorn options every mode gets: our logging, timeouts and connection class."""
    http = options.pop("http")
    assert http.func is HeaderDeadlineProtocol
    assert http.keywords == {"header_timeout_s": header_timeout_s}
    assert options == {"log_level": "info", "access_log": False, "timeout_keep_alive": 5.0,
                       "timeout_graceful_shutdown": 8.0}


def test_runs_uvicorn_with_host_port_and_workers_from_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append((a, kw)))
    monkeypatch.setenv("CNN_SERVE_HOST", "0.0.0.0")
    monkeypatch.setenv("CNN_SERVE_PORT", "9000")
    monkeypatch.setenv("CNN_SERVE_WORKERS", "2")
    monkeypatch.setenv("CNN_SERVE_BALANCE", "shared")  # uvicorn's own multi-process mode
    main()
    [(args, kwargs)] = calls
    assert args == ("app.main:app",)
    assert {k: kwargs.pop(k) for k in ("host", "port", "workers")} == \
        {"host": "0.0.0.0", "port": 9000, "workers": 2}
    check_options(kwargs)


@pytest.mark.parametrize(("balance", "deal"), [(None, True), ("deal", True),
                                               ("reuseport", False)])
def test_several_workers_get_our_supervisor_dealing_connections_by_default(
    monkeypatch: pytest.MonkeyPatch, balance: str | None, deal: bool,
) -> None:
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(workers, "run", lambda *a, **kw: calls.append((a, kw)) or 0)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("not uvicorn's workers"))
    monkeypatch.setenv("CNN_SERVE_PORT", "9000")
    monkeypatch.setenv("CNN_SERVE_WORKERS", "2")
    if balance is not None:
        monkeypatch.setenv("CNN_SERVE_BALANCE", balance)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    [(args, kwargs)] = calls
    assert args == ("127.0.0.1", 9000, 2)
    assert kwargs.pop("stop_timeout_s") == 8.0 + app_main.STOP_MARGIN_S
    assert kwargs.pop("deal") is deal
    check_options(kwargs)


def test_one_worker_runs_one_server_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[dict, dict]] = []
    monkeypatch.setattr(app_main, "serve", lambda options, **kw: calls.append((options, kw)) or 0)
    monkeypatch.setattr(workers, "run", lambda *a, **kw: pytest.fail("no supervisor for one"))
    monkeypatch.setenv("CNN_SERVE_WORKERS", "1")
    monkeypatch.setenv("CNN_SERVE_HEADER_TIMEOUT_S", "2.5")
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    [(options, where)] = calls
    assert where == {"host": "127.0.0.1", "port": 8000}
    check_options(options, header_timeout_s=2.5)


def test_bad_settings_exit_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_SERVE_WORKERS", "0")
    with pytest.raises(SystemExit) as info:
        main()
    assert str(info.value).startswith("cnn-serve: invalid settings: CNN_SERVE_WORKERS")


def test_workers_default_to_the_settings_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(workers, "run", lambda *a, **kw: calls.append(a) or 0)
    monkeypatch.setattr(settings_module, "available_cpus", lambda: 3)
    monkeypatch.setattr(app_main, "available_cpus", lambda: 3)
    monkeypatch.setenv("CNN_SERVE_DEVICE", "cpu")
    with pytest.raises(SystemExit):
        main()
    assert calls[0][2] == 3


def test_more_torch_threads_than_cpus_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    monkeypatch.setattr(settings_module, "available_cpus", lambda: 2)
    monkeypatch.setattr(app_main, "available_cpus", lambda: 2)
    monkeypatch.setenv("CNN_SERVE_DEVICE", "cpu")
    monkeypatch.setenv("CNN_SERVE_BALANCE", "shared")
    main()
    assert capsys.readouterr().err == ""  # 2 workers × 1 thread on 2 CPUs
    monkeypatch.setenv("CNN_SERVE_TORCH_THREADS", "2")
    main()
    assert "2 workers × 2 torch threads = 4 > 2 CPUs" in capsys.readouterr().err
