"""HTTP alone: a FastAPI app whose POST /predict takes a multipart `file` and answers a fixed JSON.

bench/serve.py runs it like our service (uvicorn, one worker per core) and reads its req/s as
the HTTP cost of one request: receiving the body, FastAPI's own multipart parsing of the
`file` field (`UploadFile`), reading it, writing a small JSON answer; no decode, no model. It
is the "FastAPI multipart no-op" issue 21 defines its ceiling with.

    python -m uvicorn bench.noop_app:app --workers 2
"""

from __future__ import annotations

from fastapi import FastAPI, UploadFile

app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile) -> dict[str, object]:
    await file.read()
    return {"class": "noop", "confidence": 1.0}
