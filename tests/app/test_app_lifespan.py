"""Startup: a checkpoint or setting the service cannot use stops it with one clear line;
it never serves random weights and never runs code from a checkpoint."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from app_support import save_random_checkpoint, settings_for
from fastapi.testclient import TestClient

from app.lifespan import StartupError
from app.main import create_app
from models.architectures import build_model

REPO = Path(__file__).resolve().parents[2]


class RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def missing(tmp: Path) -> Path:
    return tmp / "nowhere.pt"


def corrupt(tmp: Path) -> Path:
    (tmp / "corrupt.pt").write_bytes(b"\x80\x04this is not a checkpoint" * 10)
    return tmp / "corrupt.pt"


def runs_code(tmp: Path) -> Path:
    torch.save({"state_dict": RunsCode(tmp / "pwned"), "meta": {}}, tmp / "evil.pt")
    return tmp / "evil.pt"


def whole_model(tmp: Path) -> Path:
    torch.save(build_model("tutorial_cnn", 10), tmp / "whole.pt")
    return tmp / "whole.pt"


def not_a_checkpoint(tmp: Path) -> Path:
    torch.save([1, 2, 3], tmp / "list.pt")
    return tmp / "list.pt"


def wrong_shapes(tmp: Path) -> Path:
    state = build_model("tutorial_cnn", 4).state_dict()
    meta = save_random_checkpoint(tmp / "ok.pt")  # borrow a valid meta
    saved = torch.load(meta, weights_only=True)
    torch.save({**saved, "state_dict": state}, tmp / "shapes.pt")
    return tmp / "shapes.pt"


def nan_weights(tmp: Path) -> Path:
    path = save_random_checkpoint(tmp / "nan.pt")
    saved = torch.load(path, weights_only=True)
    saved["state_dict"]["model.8.bias"].fill_(float("nan"))
    torch.save(saved, path)
    return path


BAD_CHECKPOINTS: list[tuple[Callable[[Path], Path], str]] = [
    (missing, "no such file"),
    (corrupt, "not a PyTorch checkpoint"),
    (runs_code, "refused: loading it would run code from the file"),
    (whole_model, "refused: loading it would run code from the file"),
    (not_a_checkpoint, "not a checkpoint"),
    (wrong_shapes, "its weights do not fit tutorial_cnn with 10 classes"),
    (nan_weights, "non-finite outputs"),
]


@pytest.mark.parametrize(("make", "reason"), BAD_CHECKPOINTS, ids=[m.__name__ for m, _ in
                                                                    BAD_CHECKPOINTS])
def test_startup_refuses_an_unusable_checkpoint_naming_file_and_reason(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path)
    app = create_app(settings_for(path))
    with pytest.raises(StartupError) as info, TestClient(app):
        pass
    assert str(path) in str(info.value) and reason in str(info.value)
    assert app.state.service is None
    assert not (tmp_path / "pwned").exists()


def test_startup_reads_and_validates_the_environment(
    monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    monkeypatch.setenv("MODEL_PATH", str(checkpoint))
    monkeypatch.setenv("CNN_SERVE_DEVICE", "cpu")
    with TestClient(create_app()) as client:
        assert client.get("/healthz").json()["model"]["name"] == "random_cnn"
    monkeypatch.setenv("CNN_SERVE_QUEUE_CAPACITY", "none")
    with pytest.raises(StartupError, match="CNN_SERVE_QUEUE_CAPACITY"), TestClient(create_app()):
        pass


def test_unavailable_device_is_refused_at_startup(
    monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("MODEL_PATH", str(checkpoint))
    monkeypatch.setenv("CNN_SERVE_DEVICE", "cuda")
    with pytest.raises(StartupError, match="CNN_SERVE_DEVICE: .*CUDA is not available"), \
            TestClient(create_app()):
        pass


def test_creating_the_app_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_SERVE_MAX_BATCH_SIZE", "not a number")
    monkeypatch.setenv("MODEL_PATH", "/does/not/exist.pt")
    create_app()  # no error: settings and the model are only read at startup


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_for", "words"),
    [
        (lambda tmp: {"MODEL_PATH": str(runs_code(tmp))},
         "refused: loading it would run code from the file"),
        (lambda tmp: {"MODEL_PATH": str(missing(tmp)), "CNN_SERVE_MAX_PIXELS": "-1"},
         "invalid settings: CNN_SERVE_MAX_PIXELS"),
    ],
    ids=["code-running-checkpoint", "bad-setting"],
)
def test_server_exits_non_zero_with_one_clear_line(
    tmp_path: Path, env_for: Callable[[Path], dict[str, str]], words: str
) -> None:
    # In-process tests above cover every reason; this checks what a deployer sees.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_SERVE_")}
    env.update(env_for(tmp_path), CNN_SERVE_DEVICE="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if '"level":"error"' in line]
    assert len(errors) == 1, result.stderr
    assert words in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("freeze", [True, False])
def test_startup_freezes_what_it_loaded_out_of_the_garbage_collector(
    checkpoint: Path, freeze: bool
) -> None:
    assert gc.get_freeze_count() == 0
    app = create_app(settings_for(checkpoint, gc_freeze=freeze))
    with TestClient(app):
        frozen = gc.get_freeze_count()
    assert (frozen > 0) is freeze
    assert gc.get_freeze_count() == 0  # released again at shutdown
