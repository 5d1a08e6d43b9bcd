"""HTTP alone: a FastAPI app whose POST /predict receives the upload and answers a fixed JSON.

bench/serve.py runs it like our service (uvicorn, one worker per core) and reads its req/s as
the HTTP cost of one request: receiving the body and finding the file part in it, then writing
a small JSON answer, with no decode and no model. No server can classify faster than that.

    python -m uvicorn bench.noop_app:app --workers 2
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()

ANSWER = b'{"class":"noop","confidence":1.0}'


@app.post("/predict")
async def predict(request: Request) -> Response:
    """The bytes of the first multipart part (200), or a 422 when there is none."""
    body = await request.body()
    start = body.find(b"\r\n\r\n")
    end = body.rfind(b"\r\n--")
    if start < 0 or end <= start:
        return Response(b'{"detail":"no file part"}', status_code=422,
                        media_type="application/json")
    return Response(ANSWER, media_type="application/json")
