"""uvicorn's HTTP connection with a deadline on request headers.

uvicorn closes a keep-alive connection that stays idle after a response, but arms nothing
while a request's line and headers come in: a client that opens a connection and sends a
byte a second (or nothing at all) holds it for as long as it likes, and the app never even
sees the request, so no app-level timeout can help. This protocol arms a timer when a
connection opens and after every response, and disarms it when a request's headers are
complete; when it fires, the connection is closed (after a 408, if part of a request had
arrived). The body that follows is the app's business (UploadGuardMiddleware's body timeout).

Used by `python -m app` (see app/server/serving.py). With httptools missing (uvicorn without its
`standard` extra) the server keeps uvicorn's own protocol and this one deadline is lost.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_TIMEOUT_TEXT = b"request headers not received in time; closing\n"
REQUEST_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_TEXT), _TIMEOUT_TEXT)
)


if HttpToolsProtocol is not None:

    class HeaderDeadlineProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.header_timeout_s = header_timeout_s
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_started = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            self._head_started = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._head_started = False
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Not while a pipelined request (headers already complete) is being answered.
            if not self.transport.is_closing() and (
                self.cycle is None or self.cycle.response_complete
            ):
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self._head_started:  # an idle connection is just closed, as keep-alive does
                self.transport.write(REQUEST_TIMEOUT_408)
            self.transport.close()


def http_protocol(header_timeout_s: float) -> Any:
    """The `http` option for uvicorn.Config: this protocol with its deadline (picklable, so it
    can travel to spawned worker processes), or "auto" without httptools."""
    if HttpToolsProtocol is None:  # pragma: no cover
        return "auto"
    return functools.partial(HeaderDeadlineProtocol, header_timeout_s=header_timeout_s)
