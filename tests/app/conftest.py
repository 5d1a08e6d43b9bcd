"""Fixtures for the service tests: small checkpoints made here, apps started with their
lifespan (`with TestClient(app)`), a clean environment, captured JSON logs."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from app_support import ModelGate, save_fixed_checkpoint, save_random_checkpoint, settings_for
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x prefers `httpx2` for its TestClient and warns once, on import, when only
    # `httpx` is installed (our dev extra pins httpx). Both work the same for these tests.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import ENV_PREFIX


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own CNN_SERVE_* / MODEL_PATH must not leak into tests."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) or name.upper() == "MODEL_PATH":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random_cnn.pt")


@pytest.fixture(scope="session")
def fixed_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixed_checkpoint(tmp_path_factory.mktemp("ckpt") / "fixed_cnn.pt")


@pytest.fixture
def make_client(checkpoint: Path) -> Iterator[Callable[..., TestClient]]:
    """make_client(**settings) → a started TestClient (lifespan run); stopped after the test."""
    with ExitStack() as stack:

        def make(model_path: Path | None = None, **overrides: object) -> TestClient:
            app = create_app(settings_for(model_path or checkpoint, **overrides))
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def gate(client: TestClient) -> Iterator[ModelGate]:
    g = ModelGate(client.app.state.service.predictor.model)
    yield g
    g.remove()


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app_logs() -> Iterator[list[logging.LogRecord]]:
    """Records sent to the `app` loggers (they do not propagate to pytest's caplog)."""
    handler = _ListHandler()
    logger = logging.getLogger("app")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)
