"""bench/serve.py's own logic: inputs, aggregation, goals, CLI. (Running wrk is the benchmark's
job, not the test suite's.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bench import serve


def test_help_lists_the_flags_and_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        serve.get_args_parser().parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--duration" in out and "--scenarios" in out and "--ours-env" in out


def test_a_bad_scenario_name_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        serve.get_args_parser().parse_args(["--scenarios", "nope"])
    assert "png32-c32" in capsys.readouterr().err


def test_images_are_made_at_the_sizes_the_issue_names(tmp_path: Path) -> None:
    images = serve.make_images(tmp_path)
    expected = {"png32": ("PNG", (32, 32)), "photo": ("PNG", (456, 336)),
                "jpeg2mp": ("JPEG", (1600, 1200)), "jpeg": ("JPEG", (4000, 3000))}
    for key, (kind, size) in expected.items():
        with Image.open(images[key]) as img:
            assert (img.format, img.size) == (kind, size), key
    assert all(p.parent == tmp_path for p in images.values())


def test_the_photo_png_carries_the_chunks_phones_write(tmp_path: Path) -> None:
    data = serve.make_images(tmp_path)["photo"].read_bytes()
    for chunk in (b"iCCP", b"eXIf", b"pHYs"):
        assert chunk in data
    with Image.open(serve.make_images(tmp_path)["photo"]) as photo:
        assert photo.getexif()[0x0112] == 1  # upright: served as it is


def test_multipart_body_carries_the_file_as_field_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG data")
    body, content_type = serve.multipart(path)
    boundary = content_type.split("boundary=")[1].encode()
    assert body.startswith(b"--" + boundary) and body.endswith(b"--" + boundary + b"--\r\n")
    assert b'name="file"; filename="x.png"' in body and b"\x89PNG data" in body


def result(rps: float, p50: float = 1.0, p99: float = 2.0, non2xx: int = 0) -> serve.Result:
    return serve.Result(requests=int(rps * 10), seconds=10.0, errors=0, non2xx=non2xx,
                        p50_ms=p50, p99_ms=p99, server_cpu=1.0)


def test_rounds_are_summarised_by_their_medians_and_summed_errors() -> None:
    summary = serve.median_result([result(100, 1, 5), result(300, 3, 9, non2xx=2),
                                   result(200, 2, 7)])
    assert summary.rps == pytest.approx(200)
    assert (summary.p50_ms, summary.p99_ms, summary.non2xx) == (2, 7, 2)


@pytest.mark.parametrize(
    ("ours", "base", "expected"),
    [
        (result(300, p99=30), result(100), "≥3× ok, p99<40ms ok, no errors"),
        (result(250, p99=50), result(100), "≥3× MISSED, p99<40ms MISSED, no errors"),
        (result(300, p99=30, non2xx=1), result(100), "≥3× ok, p99<40ms ok, ERRORS"),
    ],
)
def test_goals_are_checked_against_the_issue(
    ours: serve.Result, base: serve.Result, expected: str
) -> None:
    png32_c32 = next(s for s in serve.SCENARIOS if s.name == "png32-c32")
    assert serve.goal_text(png32_c32, ours, base) == expected


def test_one_connection_goal_compares_p50() -> None:
    png32_c1 = next(s for s in serve.SCENARIOS if s.name == "png32-c1")
    assert serve.goal_text(png32_c1, result(10, p50=1.0), result(10, p50=1.1)) == \
        "p50≤base ok, no errors"
    assert "p50≤base MISSED" in serve.goal_text(png32_c1, result(10, p50=1.2),
                                                result(10, p50=1.1))


def test_machine_names_the_cpu_model_and_the_kernels_torch_uses(tmp_path: Path) -> None:
    import torch

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                       "model name\t: Example CPU 9000\nflags\t\t: fpu avx2\n")
    described = serve.machine(cpuinfo)
    assert described.startswith("Example CPU 9000, ")
    assert f"kernels {torch.backends.cpu.get_cpu_capability()}" in described


def test_machine_without_cpuinfo_still_describes_the_rest(tmp_path: Path) -> None:
    assert serve.machine(tmp_path / "missing").startswith("unknown CPU, ")
