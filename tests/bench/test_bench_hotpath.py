"""bench/hotpath.py drives both apps in-process: check it really runs them and reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import hotpath


def test_bad_counts_are_refused_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    args = hotpath.get_args_parser().parse_args(["--requests", "0"])
    assert hotpath.main(args) == 2
    assert "--requests must be >= 1" in capsys.readouterr().err


def test_both_apps_answer_and_costs_per_request_are_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = hotpath.get_args_parser().parse_args(
        ["--requests", "3", "--warmup", "1", "--rounds", "1"]
    )
    assert hotpath.main(args) == 0
    out = capsys.readouterr().out
    rounds = [line for line in out.splitlines() if line.lstrip().startswith("round 1")]
    assert len(rounds) == 2 and "ours" in out and "baseline" in out
    assert "baseline / ours" in out
    for line in rounds:  # every figure is a positive time
        figures = [float(word) for word in line.split() if word.replace(".", "").isdigit()
                   and "." in word]
        assert len(figures) == 3 and all(f > 0 for f in figures)


def test_a_child_that_gets_errors_fails_loudly(tmp_path: Path) -> None:
    """A run must not report the cost of answering 4xx: the driver checks every status."""
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text")
    args = hotpath.get_args_parser().parse_args(
        ["--requests", "1", "--warmup", "0", "--rounds", "1", "--targets", "ours",
         "--image", str(bad)]
    )
    with pytest.raises(RuntimeError, match="answered \\[415\\]"):
        hotpath.main(args)


def test_ours_env_reaches_our_app() -> None:
    """A setting our app refuses at startup fails the run, so the setting got there."""
    args = hotpath.get_args_parser().parse_args(
        ["--requests", "1", "--warmup", "0", "--rounds", "1",
         "--ours-env", "CNN_SERVE_TORCH_THREADS=0"]
    )
    with pytest.raises(RuntimeError, match="ours failed"):
        hotpath.main(args)


def test_a_negative_pause_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert hotpath.main(hotpath.get_args_parser().parse_args(["--pause-ms", "-1"])) == 2
    assert "--pause-ms >= 0" in capsys.readouterr().err
