"""bench/breakdown.py: how sampled stacks are split into categories."""

from __future__ import annotations

import pytest

from bench import breakdown

LOOP = "Runner.run (/py/lib/python3.11/asyncio/runners.py:118)"
UVICORN = "run_asgi (/venv/site-packages/uvicorn/protocols/http/httptools_impl.py:409)"
ROUTE = "predict (/repo/app/http/routes/predict.py:171)"
PARSE = "parse (/repo/app/http/multipart.py:80)"
WORKER = "_worker (/py/lib/python3.11/concurrent/futures/thread.py:81)"
DECODE = "decode_png (/repo/models/png.py:233)"
SPNG = "load (/venv/site-packages/pyspng/lib.py:48)"
NORMALIZE = "normalize (/repo/models/preprocess.py:110)"
PREDICT = "Predictor.predict (/repo/app/inference/predictor.py:90)"
CONV = "_conv_forward (/venv/site-packages/torch/nn/modules/conv.py:543)"


@pytest.mark.parametrize(("stack", "expected"), [
    ([LOOP], "event loop"),
    ([LOOP, UVICORN], "HTTP server"),
    ([LOOP, UVICORN, ROUTE], "route"),
    ([LOOP, UVICORN, ROUTE, PARSE], "multipart"),
    ([WORKER, DECODE, SPNG], "decode"),
    ([WORKER, PREDICT, NORMALIZE], "model"),
    ([WORKER, PREDICT, CONV], "model"),
    ([WORKER], "batching + threads"),
    (["main (/somewhere/else.py:1)"], "other"),
])
def test_a_stack_counts_for_its_innermost_claimed_frame(stack: list[str], expected: str) -> None:
    assert breakdown.category(stack) == expected


def test_raw_lines_are_summed_per_category_and_leaf() -> None:
    lines = [
        f"process 12:python;thread (0x1);{LOOP};{UVICORN} 30",
        f"process 12:python;thread (0x2);{WORKER};{DECODE};{SPNG} 50",
        f"process 13:python;{WORKER};{DECODE};{SPNG} 20",
        "garbage without a count",
    ]
    by_category, by_leaf = breakdown.split_samples(lines)
    assert by_category == {"HTTP server": 30, "decode": 70}
    assert by_leaf[SPNG] == 70


def test_the_table_splits_the_measured_cpu_by_share() -> None:
    rows = breakdown.table(breakdown.collections.Counter({"decode": 3, "model": 1}), 4.0)
    assert any(r.startswith("decode") and "3.000" in r and "75.0%" in r for r in rows)
    assert any(r.startswith("model") and "1.000" in r for r in rows)
    assert rows[-1].endswith("4.000")
