"""Logs as one JSON object per line, and the Prometheus metrics of one app instance.

Each app gets its own CollectorRegistry, so several apps in one process (tests) never clash.
Under `python -m app` the supervisor sets PROMETHEUS_MULTIPROC_DIR before it starts the
worker processes: prometheus-client then keeps every value in files there, and a scrape of any
worker reports the sum over all of them (restarted workers' counts included), not the numbers
of whichever process happened to answer.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LOGGER_NAME = "app"
# prometheus-client's multi-process mode is on when this names a folder (app/server/workers.py
# sets it).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker, when there are several
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the `app` loggers; uvicorn keeps its own handlers."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False


# Seconds. Requests span ~1 ms (tiny PNG, idle) to the request timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._prediction_children: dict[str, Counter] = {}
        self._model_labels: dict[str, str] | None = None
        r = self.registry
        self.requests = Counter(
            "cnn_serve_http_requests", "HTTP requests answered, by route template and status",
            ["route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "cnn_serve_http_request_duration_seconds", "Time from request start to response end",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "cnn_serve_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS, registry=r,
        )
        self.batch_latency = Histogram(
            "cnn_serve_batch_inference_seconds", "Time of one forward pass, preprocessing included",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "cnn_serve_queue_depth", "Images admitted and not yet answered", registry=r,
            multiprocess_mode="livesum",
        )
        self.predictions = Counter(
            "cnn_serve_predictions", "Predicted classes (the top-1 of each image)", ["class"],
            registry=r,
        )
        # What an Info metric shows, as a gauge: Info has no multi-process form. 1 while some
        # live worker serves that checkpoint, 0 once all have reloaded another (remove() has no
        # multi-process form either); a dead worker's value is dropped ("live").
        self.model = Gauge(
            "cnn_serve_model_info", "The checkpoint being served (1; 0 after a reload)",
            ["name", "arch", "sha256", "device"], registry=r, multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "cnn_serve_model_reloads", "Model reloads (SIGHUP), one per worker process",
            ["result"], registry=r,
        )
        for result in ("ok", "failed"):
            self.reloads.labels(result)  # both series exist from the start, at 0

    def observe_request(self, route: str, method: str, status: str, seconds: float) -> None:
        # labels() validates and locks on every call; the label sets are small and bounded
        # (route templates, methods, statuses), so each child is looked up once.
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_prediction(self, class_name: str) -> None:
        child = self._prediction_children.get(class_name)
        if child is None:
            child = self._prediction_children[class_name] = self.predictions.labels(class_name)
        child.inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def set_model(self, labels: dict[str, str]) -> None:
        """The checkpoint served from now on; the one before it (a reload) goes to 0."""
        if self._model_labels is not None and self._model_labels != labels:
            self.model.labels(**self._model_labels).set(0)
        self.model.labels(**labels).set(1)
        self._model_labels = labels

    def count_reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "failed").inc()

    def exposition(self) -> bytes:
        """The Prometheus text of this app, or of all worker processes together."""
        if os.environ.get(METRICS_DIR_VARIABLE):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
