"""Settings: defaults, the environment (CNN_SERVE_* and MODEL_PATH), clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import app.settings as settings_module
from app.settings import Settings, SettingsError, available_cpus, load_settings, unknown_variables
from models import DEFAULT_CHECKPOINT
from models.images import PILLOW_PIXEL_CEILING


def test_defaults_serve_the_shipped_checkpoint_with_safe_limits() -> None:
    s = load_settings()
    assert s.model_path == DEFAULT_CHECKPOINT
    assert s.device == "auto"
    assert s.max_upload_bytes == 10 * 1024 * 1024
    assert s.max_pixels <= PILLOW_PIXEL_CEILING
    assert s.api_key is None
    assert (s.max_batch_size, s.max_batch_wait_ms, s.default_top_k) == (32, 2.0, 3)


@pytest.mark.parametrize("name", ["MODEL_PATH", "CNN_SERVE_MODEL_PATH"])
def test_model_path_is_read_from_either_variable(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "/srv/model.pt")
    assert load_settings().model_path == Path("/srv/model.pt")


def test_prefixed_model_path_wins_over_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PATH", "/plain.pt")
    monkeypatch.setenv("CNN_SERVE_MODEL_PATH", "/prefixed.pt")
    assert load_settings().model_path == Path("/prefixed.pt")


def test_values_come_from_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_SERVE_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("CNN_SERVE_MAX_BATCH_WAIT_MS", "0.5")
    monkeypatch.setenv("CNN_SERVE_API_KEY", "a-long-enough-key")
    monkeypatch.setenv("CNN_SERVE_LOG_LEVEL", "debug")
    s = load_settings()
    assert (s.max_batch_size, s.max_batch_wait_ms, s.log_level) == (8, 0.5, "debug")
    assert s.api_key is not None and s.api_key.get_secret_value() == "a-long-enough-key"
    assert "a-long-enough-key" not in repr(s)


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_SERVE_API_KEY", "")
    monkeypatch.setenv("MODEL_PATH", "")
    s = load_settings()
    assert s.api_key is None and s.model_path == DEFAULT_CHECKPOINT


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("CNN_SERVE_MAX_BATCH_SIZE", "lots", "CNN_SERVE_MAX_BATCH_SIZE: Input should be a valid"),
        ("CNN_SERVE_MAX_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("CNN_SERVE_MAX_UPLOAD_BYTES", "-5", "CNN_SERVE_MAX_UPLOAD_BYTES"),
        ("CNN_SERVE_MAX_PIXELS", str(PILLOW_PIXEL_CEILING + 1), "CNN_SERVE_MAX_PIXELS"),
        ("CNN_SERVE_REQUEST_TIMEOUT_S", "0", "CNN_SERVE_REQUEST_TIMEOUT_S"),
        ("CNN_SERVE_LOG_LEVEL", "loud", "'debug', 'info', 'warning', 'error' or 'critical'"),
        ("CNN_SERVE_API_KEY", "short", "api_key must be at least 8 characters"),
        ("CNN_SERVE_MAX_BATCH_BYTES", "10", "max_batch_bytes must be at least max_upload_bytes"),
        ("CNN_SERVE_DEVICE", "tpu", "CNN_SERVE_DEVICE: Value error, unknown device 'tpu'"),
    ],
)
def test_bad_value_is_one_clear_sentence_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("invalid settings: ") and words in message
    assert "\n" not in message


def test_unknown_prefixed_variables_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_SERVE_MAX_BATCHSIZE", "4")  # typo
    monkeypatch.setenv("CNN_SERVE_DEVICE", "cpu")
    assert unknown_variables() == ["CNN_SERVE_MAX_BATCHSIZE"]


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.max_batch_size = 3  # type: ignore[misc]


def test_workers_default_to_one_per_available_cpu_on_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "available_cpus", lambda: 3)
    assert Settings(device="cpu").workers is None
    assert Settings(device="cpu").worker_count == 3
    assert Settings(device="cpu", workers=5).worker_count == 5


@pytest.mark.parametrize(
    ("settings", "expected"),
    [({}, 10 * 1024 * 1024),  # a worker per CPU: every upload (max_upload_bytes)
     ({"max_upload_bytes": 1000}, 1000),
     ({"workers": 4}, 10 * 1024 * 1024),
     ({"workers": 2}, 32 * 1024),  # cores to spare: decode threads run beside the model
     ({"inline_decode_max_bytes": 0}, 0),
     ({"workers": 1, "inline_decode_max_bytes": 5000}, 5000)],
)
def test_uploads_are_decoded_in_the_inference_thread_when_each_cpu_has_a_worker(
    monkeypatch: pytest.MonkeyPatch, settings: dict, expected: int,
) -> None:
    monkeypatch.setattr(settings_module, "available_cpus", lambda: 3)
    assert Settings(device="cpu", **settings).inline_decode_bytes == expected


def test_a_gpu_process_decodes_large_uploads_beside_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(device="cpu")
    monkeypatch.setattr(settings_module, "resolve_device", lambda _: torch.device("cuda"))
    assert settings.inline_decode_bytes == 32 * 1024


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1), ("garbage", None)],
)
def test_available_cpus_honours_a_cgroup_quota(
    tmp_path: Path, cpu_max: str, expected: int | None
) -> None:
    mask = len(os.sched_getaffinity(0))
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert available_cpus(path) == min(mask, expected or mask)
    assert available_cpus(tmp_path / "missing") == mask


def test_channels_last_is_on_by_default_and_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().channels_last is True
    monkeypatch.setenv("CNN_SERVE_CHANNELS_LAST", "false")
    assert load_settings().channels_last is False


def test_libspng_is_on_by_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().libspng is True
    monkeypatch.setenv("CNN_SERVE_LIBSPNG", "false")
    assert load_settings().libspng is False


def test_readme_documents_every_setting() -> None:
    # The configuration table is what deployers read; a setting missing from it is invisible.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [
        name for name in Settings.model_fields
        if f"`{settings_module.ENV_PREFIX}{name.upper()}`" not in readme
    ]
    assert missing == []
