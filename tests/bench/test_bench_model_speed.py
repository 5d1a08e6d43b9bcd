"""bench/model_speed.py times the tutorial-grade forward and ours, side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import model_speed


def test_every_variant_gets_a_positive_time_per_batch_and_a_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bench.model_speed.cpu_has_fast_bf16", lambda: True)
    path = model_speed.random_checkpoint(tmp_path, "tutorial_cnn", "flip")
    model_speed.main(model_speed.get_args_parser().parse_args(
        ["--checkpoint", str(path), "--repeats", "2"]))
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith("random_tutorial_cnn")]
    variants = [" ".join(r[1:-4]) for r in rows]
    assert variants == ["tutorial-grade", "ours (tta flip)", "ours bf16 (tta flip)"]
    for row in rows:
        ms = [float(v) for v in row[-4:-2]]
        assert all(v > 0 for v in ms)
    assert rows[0][-2:] == ["1.00×", "1.00×"]  # the baseline against itself
