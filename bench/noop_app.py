"""HTTP alone: a FastAPI app whose POST /predict takes a multipart `file` and answers a fixed JSON.

bench/serve.py serves it the way `python -m app` serves ours, through the same process model
(app/server: one worker process per CPU, connections dealt to them in turn, the same uvicorn
options), and reads its req/s as the HTTP cost of one request: receiving the body, FastAPI's
own multipart parsing of the `file` field (`UploadFile`), reading it, writing a small JSON
answer; no decode, no model. It is the "FastAPI multipart no-op" issue 21 defines its ceiling
with. (uvicorn's own --workers share one socket, and under wrk one of two workers took almost
every connection: a ceiling of one core.)

    python -m bench.noop_app --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from fastapi import FastAPI, UploadFile

app = FastAPI()
APP = "bench.noop_app:app"


@app.post("/predict")
async def predict(file: UploadFile) -> dict[str, object]:
    await file.read()
    return {"class": "noop", "confidence": 1.0}


def serve_noop(host: str, port: int, options: dict[str, Any], parent_pid: int,
               channel: socket.socket | None) -> None:
    """A worker process of app/server/workers.py that serves this app instead of ours."""
    from app.server import serving, workers

    serving.APP = APP
    workers.serve_process(host, port, options, parent_pid, channel)


def main(argv: list[str] | None = None) -> int:
    from app.server import workers
    from app.server.serving import uvicorn_options
    from app.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m bench.noop_app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    options = uvicorn_options(Settings(log_level="info"))
    return workers.run(args.host, args.port, args.workers, target=serve_noop, **options)


if __name__ == "__main__":
    sys.exit(main())
