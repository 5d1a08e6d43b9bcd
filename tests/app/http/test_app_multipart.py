"""app/http/multipart.py: splitting an in-memory multipart/form-data body into its parts."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from app.http.multipart import MultipartError, Part, TooManyPartsError, boundary_of, parse

B = b"XyZ-boundary-42"


def body(*parts: tuple[str, str | None, bytes], boundary: bytes = B,
         preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (b"--" + boundary + b"\r\nContent-Disposition: " + disposition.encode()
                + b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    return out + b"--" + boundary + b"--\r\n" + epilogue


def test_parts_come_back_in_order_with_names_filenames_and_exact_bytes() -> None:
    raw = body(("file", "a.png", b"\x89PNG\r\n\x1a\n..."), ("note", None, b"hello"),
               ("files", "b c.jpg", b""))
    assert parse(raw, B, max_parts=10) == [
        Part("file", "a.png", b"\x89PNG\r\n\x1a\n..."), Part("note", None, b"hello"),
        Part("files", "b c.jpg", b""),
    ]


def test_preamble_and_epilogue_are_ignored() -> None:
    raw = body(("file", "a", b"data"), preamble=b"ignore me\r\n", epilogue=b"and me")
    assert parse(raw, B, max_parts=1) == [Part("file", "a", b"data")]


def test_data_that_looks_like_a_boundary_line_but_is_not_one_is_kept() -> None:
    tricky = b"\r\n--XyZ-boundary-4\r\n--" + B[:-1] + b"\r\n\r\n"
    assert parse(body(("file", "a", tricky)), B, max_parts=1)[0].data == tricky


def test_quoted_and_escaped_file_names_follow_the_header_rules() -> None:
    raw = (b"--" + B + b'\r\nContent-Disposition: form-data; name="file"; '
           b'filename="we\\"ird; name.png"\r\n\r\nX\r\n--' + B + b"--")
    assert parse(raw, B, max_parts=1) == [Part("file", 'we"ird; name.png', b"X")]


def test_utf8_and_latin1_file_names_are_decoded() -> None:
    raw = (b"--" + B + b'\r\ncontent-disposition: form-data; name="file"; filename="'
           + "é.png".encode() + b'"\r\n\r\nX\r\n--' + B + b'\r\nContent-Disposition: '
           b'form-data; name="file"; filename="\xe9.png"\r\n\r\nY\r\n--' + B + b"--")
    assert [p.filename for p in parse(raw, B, max_parts=2)] == ["é.png", "é.png"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"no boundary anywhere", "does not contain the boundary"),
        (body(("file", "a", b"data"))[:-25], "not closed by the boundary"),
        (b"--" + B + b"\r\nContent-Disposition: form-data; name=\"f\"", "headers never end"),
        (b"--" + B + b"\r\nContent-Type: image/png\r\n\r\nX\r\n--" + B + b"--",
         "no Content-Disposition"),
        (b"--" + B + b"\r\nContent-Disposition: form-data\r\n\r\nX\r\n--" + B + b"--",
         'no "name"'),
        (b"--" + B + b"junk\r\n\r\nX\r\n--" + B + b"--", "not followed by a line break"),
        (b"--" + B + b"\r\n\r\nX\r\n--" + B + b"--", "no Content-Disposition"),
    ],
    ids=["no-boundary", "truncated", "endless-headers", "no-disposition", "no-name",
         "junk-after-boundary", "no-headers"],
)
def test_malformed_bodies_raise_a_clear_error(raw: bytes, words: str) -> None:
    with pytest.raises(MultipartError, match=words):
        parse(raw, B, max_parts=5)


def test_more_parts_than_allowed_is_refused_before_reading_them_all() -> None:
    raw = body(*[("files", f"{i}.png", b"x") for i in range(5)])
    assert len(parse(raw, B, max_parts=5)) == 5
    with pytest.raises(TooManyPartsError) as info:
        parse(raw, B, max_parts=4)
    assert info.value.limit == 4


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('multipart/form-data; boundary="a b:c"', b"a b:c"),
        ("Multipart/Form-Data; charset=utf-8; boundary=abc", b"abc"),
        ("image/png", None),
        ("application/x-www-form-urlencoded", None),
        ("", None),
        (None, None),
    ],
)
def test_boundary_is_read_from_the_content_type(
    content_type: str | None, expected: bytes | None
) -> None:
    assert boundary_of(content_type) == expected


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary="])
def test_multipart_without_a_boundary_is_malformed(content_type: str) -> None:
    with pytest.raises(MultipartError, match="boundary"):
        boundary_of(content_type)


@given(
    parts=st.lists(
        st.tuples(st.sampled_from(["file", "files", "x"]),
                  st.one_of(st.none(), st.text("abc.-_ é", max_size=12)),
                  st.binary(max_size=300)),
        max_size=6,
    ),
    preamble=st.sampled_from([b"", b"preamble\r\n"]),
)
def test_any_encoded_body_parses_back_to_its_parts(
    parts: list[tuple[str, str | None, bytes]], preamble: bytes
) -> None:
    boundary = b"----hypothesis7f3a"
    assume(all(boundary not in data for _, _, data in parts))
    raw = body(*parts, boundary=boundary, preamble=preamble)
    assert parse(raw, boundary, max_parts=6) == [Part(n, f, d) for n, f, d in parts]


@given(
    raw=st.one_of(
        st.binary(max_size=400),
        st.builds(lambda a, b: a + b"\r\n--" + B + b + b"\r\n--" + B + b"--",
                  st.binary(max_size=80), st.binary(max_size=200)),
    ),
)
def test_arbitrary_bytes_give_parts_or_a_multipart_error_and_nothing_else(raw: bytes) -> None:
    try:
        parts = parse(raw, B, max_parts=8)
    except MultipartError:
        return
    assert all(isinstance(p, Part) and isinstance(p.data, bytes) for p in parts)


@given(content_type=st.text(max_size=80))
def test_arbitrary_content_types_give_a_boundary_none_or_a_multipart_error(
    content_type: str,
) -> None:
    try:
        boundary = boundary_of(content_type)
    except MultipartError:
        return
    assert boundary is None or isinstance(boundary, bytes)
