"""Reading multipart/form-data uploads that are already in memory.

FastAPI's `File()` parameters cost about 0.2 ms of event-loop time per request (python-multipart
parses part headers byte by byte, each part gets a SpooledTemporaryFile, then FastAPI validates
the result): as much as decoding a 32×32 PNG and running the model on it. The upload routes
read the body instead (the upload guard has already capped its size) and split it here on the
boundary with `bytes.find`. Part headers are parsed with python-multipart's own header parser,
so quoting and escaping follow the same rules as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import parse_options_header

CRLF = b"\r\n"


class MultipartError(ValueError):
    """The body claims to be multipart/form-data but is not well formed."""


class TooManyPartsError(MultipartError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} parts")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    data: bytes


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary of a `multipart/form-data` Content-Type, or None for any other type."""
    if not content_type:
        return None
    try:  # HTTP headers are latin-1 (Starlette decodes them so); anything else is not ours
        kind, options = parse_options_header(content_type.encode("latin-1"))
    except UnicodeEncodeError:
        return None
    if kind != b"multipart/form-data":
        return None
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise MultipartError("the Content-Type header gives no usable boundary")
    return boundary


def _headers(block: bytes) -> tuple[str, str | None]:
    """The part's form field name and file name, from its header block."""
    disposition = None
    for line in block.split(CRLF):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-disposition":
            disposition = value.strip()
    if disposition is None:
        raise MultipartError("a part has no Content-Disposition header")
    _, options = parse_options_header(disposition)
    if b"name" not in options:
        raise MultipartError('a part\'s Content-Disposition header has no "name"')
    filename = options.get(b"filename")
    return _text(options[b"name"]), None if filename is None else _text(filename)


def parse(body: bytes, boundary: bytes, *, max_parts: int) -> list[Part]:
    """Every part of a multipart/form-data body, in order (RFC 7578).

    Raises MultipartError for a body that does not follow the format, TooManyPartsError
    (a MultipartError) past `max_parts` parts.
    """
    delimiter = b"--" + boundary
    next_delimiter = CRLF + delimiter
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:  # anything before the first delimiter is a preamble, to be ignored
        found = body.find(next_delimiter)
        if found < 0:
            raise MultipartError("the body does not contain the boundary")
        pos = found + len(next_delimiter)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", pos):
            return parts  # the close delimiter; anything after it is an epilogue
        line_end = body.find(CRLF, pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise MultipartError("a boundary line is not followed by a line break")
        if len(parts) == max_parts:
            raise TooManyPartsError(max_parts)
        start = line_end + len(CRLF)
        if body.startswith(CRLF, start):  # a part without headers
            headers_end, data_start = start, start + len(CRLF)
        else:
            headers_end = body.find(CRLF + CRLF, start)
            if headers_end < 0:
                raise MultipartError("a part's headers never end")
            data_start = headers_end + 2 * len(CRLF)
        data_end = body.find(next_delimiter, data_start)
        if data_end < 0:
            raise MultipartError("a part is not closed by the boundary (truncated body?)")
        name, filename = _headers(body[start:headers_end])
        parts.append(Part(name, filename, body[data_start:data_end]))
        pos = data_end + len(next_delimiter)
