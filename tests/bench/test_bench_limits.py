"""bench/limits.py: the limit arithmetic, the decode candidates and the goals it prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import limits, serve


def test_limit_is_the_cores_over_the_summed_costs() -> None:
    # 2 cores, 2.5 + 0.5 + 1.0 ms per request: 2,000 ms of CPU a second ÷ 4 ms = 500 req/s.
    assert limits.limit_rps(2, 2.5, 0.5, 1.0) == pytest.approx(500)


def test_limit_table_takes_the_fastest_decode_and_the_noop_http_cost() -> None:
    row = {"name": "photo-c32", "connections": 32, "ours": 400.0, "noop": 4000.0,
           "decode": {"ours": 3.0, "pillow": 2.5}, "min_limit_share": 0.85,
           "min_noop_share": None}
    header, cells = limits.limit_table([row], cores=2, model=0.5)
    values = dict(zip(header, cells, strict=True))
    # http = 2 cores × 1000 / 4000 req/s = 0.5 ms; limit = 2000 / (2.5 + 0.5 + 0.5) = 571.
    assert values["http ms"] == "0.500"
    assert values["decode ms (fastest)"] == "2.500 (pillow)"
    assert values["limit req/s"] == "571"
    assert values["ours/limit"] == "70%" and values["ours/noop"] == "10%"
    assert values["goal"] == "limit≥85% MISSED"


def test_one_connection_is_limited_to_one_core() -> None:
    row = {"name": "jpeg12mp-c1", "connections": 1, "ours": 80.0, "noop": 1000.0,
           "decode": {"ours": 10.0}, "min_limit_share": None, "min_noop_share": None}
    header, cells = limits.limit_table([row], cores=2, model=0.5)
    values = dict(zip(header, cells, strict=True))
    # one request at a time: http = 1 × 1000 / 1000 = 1 ms; limit = 1000 / 11.5 = 87 req/s.
    assert (values["http ms"], values["limit req/s"]) == ("1.000", "87")


@pytest.mark.parametrize(("share", "goal", "expected"), [
    (0.9, 0.85, "limit≥85% ok"), (0.84, 0.85, "limit≥85% MISSED"), (0.1, None, ""),
])
def test_share_goal(share: float, goal: float | None, expected: str) -> None:
    assert limits.share_goal(share, goal, "limit") == expected


@pytest.mark.parametrize("key", ["png32", "photo", "jpeg2mp"])
def test_every_decode_candidate_gives_the_size_the_network_takes(
    tmp_path: Path, key: str
) -> None:
    data = serve.make_images(tmp_path, jpeg_size=(64, 48))[key].read_bytes()
    candidates = limits.decode_candidates(data, 32)
    assert {"ours", "pillow", "torchvision"} <= set(candidates)
    assert ("libspng+pillow" in candidates) == key.startswith(("png", "photo"))
    for name, call in candidates.items():
        out = call()
        shape = tuple(out.shape)
        assert shape in ((32, 32, 3), (3, 32, 32), (1, 3, 32, 32)), (name, shape)
        # the same picture, not just the same size: every candidate is close to ours
        pixels = out.squeeze(0) if isinstance(out, torch.Tensor) else torch.from_numpy(out.copy())
        if pixels.shape[-1] == 3:
            pixels = pixels.permute(2, 0, 1)
        ours = candidates["ours"]().float()
        assert float((pixels.float() - ours).abs().mean()) < 12, name


def test_fastest_ms_reports_per_call_time() -> None:
    calls = []
    assert limits.fastest_ms(lambda: calls.append(1), rounds=2) > 0
    assert len(calls) >= 4  # warm-up, the sizing call and at least one per round


def test_model_share_runs_the_served_model(tmp_path: Path) -> None:
    checkpoint = serve.make_checkpoint(tmp_path / "cnn.pt")
    assert limits.model_ms(checkpoint) > 0
    assert np.isfinite(limits.model_ms(checkpoint, tta="flip"))
