"""Unit tests for lrs.attachments: the multipart/mixed transmission format (Part Three §1.5.2)."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrs import attachments as attachments_module
from lrs.attachments import (
    Part,
    build_multipart,
    check_attachments,
    declared_attachments,
    parse_multipart,
    require_no_raw_attachments,
)
from lrs.errors import XAPIError

NASTY = b"\r\n--\r\n\x00\xff--xapi-\r\n\r\nContent-Type: text/plain\r\n\r\n--\n--boundary\n\r"
TEXT = b"here is a simple attachment"
TEXT_SHA = "495395e777cd98da653df9615d09c0fd6bb2f8d4788394cd53c56a3bfdcd848a"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def declaration(data: bytes, content_type: str = "application/octet-stream", **extra) -> dict:
    return {
        "usageType": "http://example.com/attachment-usage/test",
        "display": {"en-US": "A test attachment"},
        "contentType": content_type,
        "length": len(data),
        "sha2": sha256(data),
        **extra,
    }


def statement(*attachments: dict) -> dict:
    out = {
        "actor": {"mbox": "mailto:learner@example.com"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
        "object": {"id": "http://example.com/activities/multipart"},
    }
    if attachments:
        out["attachments"] = list(attachments)
    return out


def part(data: bytes, content_type: str = "application/octet-stream", **headers: str) -> Part:
    all_headers = {"content-type": content_type, "x-experience-api-hash": sha256(data)}
    all_headers.update({k.replace("_", "-"): v for k, v in headers.items()})
    return Part(
        headers=all_headers,
        content_type=content_type,
        sha2=all_headers["x-experience-api-hash"],
        data=data,
        content_transfer_encoding="binary",
    )


def raw_body(*chunks: bytes, eol: bytes = b"\r\n") -> bytes:
    """Join lines with ``eol``; ``chunks`` are already-joined lines."""
    return eol.join(chunks)


def assert_400(excinfo: pytest.ExceptionInfo[XAPIError], *words: str) -> None:
    assert excinfo.value.status == 400
    for word in words:
        assert word.lower() in excinfo.value.message.lower(), excinfo.value.message


# ---------------------------------------------------------------------------- round trip


def test_round_trip_keeps_binary_data_intact() -> None:
    blobs = [NASTY, b"", b"\x00" * 5, bytes(range(256)) * 4, b"--", b"\r\n"]
    statements = [statement(*(declaration(b) for b in blobs))]
    statements_json = orjson.dumps(statements)
    body, content_type = build_multipart(
        statements_json, [(sha256(b), "application/octet-stream", b) for b in blobs]
    )
    assert content_type.startswith("multipart/mixed; boundary=")

    parsed, parts = parse_multipart(body, content_type)

    assert parsed == statements
    assert [p.data for p in parts] == blobs
    for p in parts:
        assert p.content_transfer_encoding == "binary"
        assert p.content_type == "application/octet-stream"
    matched = check_attachments(parsed, parts)
    assert set(matched) == {sha256(b) for b in blobs}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_round_trip_any_bytes(blobs: list[bytes]) -> None:
    statements = [statement(*(declaration(b, "image/png") for b in blobs))]
    body, content_type = build_multipart(
        orjson.dumps(statements), [(sha256(b), "image/png", b) for b in blobs]
    )
    parsed, parts = parse_multipart(body, content_type)
    assert parsed == statements
    unique = list(dict.fromkeys(blobs))
    assert [p.data for p in parts] == unique
    assert set(check_attachments(parsed, parts)) == {sha256(b) for b in unique}


def test_build_multipart_sends_one_part_per_distinct_sha2() -> None:
    # Part Three §1.5.2.s2.b2.b5: one copy of data used by several statements.
    body, content_type = build_multipart(
        b"[]", [(sha256(TEXT), "text/plain", TEXT), (sha256(TEXT).upper(), "text/plain", TEXT)]
    )
    _, parts = parse_multipart(body, content_type)
    assert len(parts) == 1
    assert body.count(b"Content-Transfer-Encoding: binary") == 1
    assert body.endswith(b"--\r\n")


def test_build_multipart_boundary_never_occurs_in_payload(monkeypatch) -> None:
    candidates = iter(["xapi-clash", "xapi-clash", "xapi-fresh"])
    monkeypatch.setattr(attachments_module, "_new_boundary", lambda: next(candidates))
    data = b"prefix --xapi-clash-- suffix"
    body, content_type = build_multipart(b"{}", [(sha256(data), "text/plain", data)])
    assert content_type == "multipart/mixed; boundary=xapi-fresh"
    _, parts = parse_multipart(body, content_type)
    assert parts[0].data == data


def test_build_multipart_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        build_multipart(b"{}", [(sha256(TEXT), "text/plain\r\nX-Evil: 1", TEXT)])


# ------------------------------------------------------------------ real-world bodies


def test_parses_the_specification_example() -> None:
    # Part Three §1.5.2.s6: quoted boundary with every allowed character class, CRLF
    # line endings, no space after header colons, a leading CRLF before the first boundary.
    boundary = b"abcABC0123'()+_,-./:=?"
    statement_json = orjson.dumps(
        statement(declaration(TEXT, "text/plain; charset=ascii", description={"en-US": "x"}))
    )
    body = raw_body(
        b"",
        b"--" + boundary,
        b"Content-Type:application/json",
        b"",
        statement_json,
        b"--" + boundary,
        b"Content-Type:text/plain",
        b"Content-Transfer-Encoding:binary",
        b"X-Experience-API-Hash:" + TEXT_SHA.encode(),
        b"",
        TEXT,
        b"--" + boundary + b"--",
    )
    parsed, parts = parse_multipart(body, 'multipart/mixed; boundary="abcABC0123\'()+_,-./:=?"')
    assert parsed["attachments"][0]["sha2"] == TEXT_SHA
    assert parts[0].data == TEXT
    assert parts[0].content_type == "text/plain"
    # The example declares "text/plain; charset=ascii" and sends "text/plain": media types
    # match, parameters are not compared.
    assert set(check_attachments([parsed], parts)) == {TEXT_SHA}


def test_accepts_bare_lf_line_endings_and_extra_headers() -> None:
    # The ADL conformance suite's .part files and some PHP clients use "\n" line endings.
    boundary = b"-------314159265358979323846"
    other = b"here is another simple attachment"
    statement_json = orjson.dumps(
        statement(declaration(TEXT, "text/plain"), declaration(other, "text/plain"))
    )
    body = raw_body(
        b"--" + boundary,
        b"Content-Type: application/json",
        b"",
        statement_json,
        b"--" + boundary,
        b'Content-Disposition: attachment; filename="text_data.txt"',
        b"Content-Type: text/plain",
        b"Content-Transfer-Encoding: binary",
        b"X-Experience-API-Hash: " + TEXT_SHA.encode(),
        b"",
        TEXT,
        b"--" + boundary,
        b"Content-Type: text/plain",
        b"X-Experience-API-Hash: " + sha256(other).encode(),
        b"",
        other,
        b"--" + boundary + b"--",
        b"",
        eol=b"\n",
    )
    parsed, parts = parse_multipart(body, "multipart/mixed; boundary=" + boundary.decode())
    assert [p.data for p in parts] == [TEXT, other]
    assert parts[0].headers["content-disposition"] == 'attachment; filename="text_data.txt"'
    # No Content-Transfer-Encoding: assumed binary (Part Three §1.5.2.s3.b6).
    assert parts[1].content_transfer_encoding is None
    assert len(check_attachments(parsed, parts)) == 2


def test_ignores_preamble_epilogue_and_transport_padding() -> None:
    data = b"payload"
    statement_json = orjson.dumps([statement(declaration(data))])
    body = raw_body(
        b"This is the preamble. --b is not a boundary here.",
        b"--b  \t",
        b"content-type: APPLICATION/JSON; charset=utf-8",
        b"",
        statement_json,
        b"--b",
        b"X-EXPERIENCE-API-HASH: " + sha256(data).upper().encode(),
        b"Content-Transfer-Encoding: BINARY",
        b"",
        data,
        b"--b-- ",
        b"epilogue --b",
    )
    parsed, parts = parse_multipart(body, "Multipart/Mixed; Boundary=b")
    assert parsed == orjson.loads(statement_json)
    assert parts[0].sha2 == sha256(data)  # normalised to lower case
    assert parts[0].data == data
    assert parts[0].content_type == "application/octet-stream"  # no Content-Type header
    assert check_attachments(parsed, parts) == {sha256(data): parts[0]}


def test_multipart_without_attachments_is_fine() -> None:
    # Part Three §1.5.2.s3.b8: a multipart batch need not carry attachments.
    body = raw_body(b"--b", b"Content-Type: application/json", b"", b"[]", b"--b--")
    assert parse_multipart(body, "multipart/mixed; boundary=b") == ([], [])
    assert check_attachments([], []) == {}


# ----------------------------------------------------------------------- parse errors


def simple_body(*part_lines: bytes, first_type: bytes = b"application/json") -> bytes:
    return raw_body(
        b"--b",
        b"Content-Type: " + first_type,
        b"",
        orjson.dumps(statement(declaration(TEXT))),
        b"--b",
        *part_lines,
        b"--b--",
    )


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("application/json", ["multipart/mixed"]),
        ("multipart/form-data; boundary=b", ["multipart/mixed"]),
        ("", ["multipart/mixed"]),
        ("multipart/mixed", ["boundary"]),
        ("multipart/mixed;", ["boundary"]),
        ('multipart/mixed; boundary=""', ["boundary"]),
    ],
)
def test_bad_content_type_header(header: str, words: list[str]) -> None:
    body = simple_body(b"X-Experience-API-Hash: " + TEXT_SHA.encode(), b"", TEXT)
    with pytest.raises(XAPIError) as excinfo:
        parse_multipart(body, header)
    assert_400(excinfo, *words)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", ["no boundary delimiter"]),
        (b"just some text without a boundary", ["no boundary delimiter"]),
        (b"--other\r\nContent-Type: application/json\r\n\r\n{}\r\n--other--", ["boundary"]),
        (b"--b\r\nContent-Type: application/json\r\n\r\n{}", ["truncated"]),
        (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b", ["truncated"]),
        (b"--b", ["truncated"]),
        (b"--bx\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--", ["unexpected"]),
        (b"--b--\r\n", ["no parts"]),
        (b"--b\r\nContent-Type: application/json\r\n{}\r\n--b--", ["blank line"]),
        (b"--b\r\nContent-Type application/json\r\n\r\n{}\r\n--b--", ["malformed header"]),
        (b"--b\r\n\r\n{}\r\n--b--", ["application/json"]),
        (b"--b\r\nContent-Type: text/plain\r\n\r\n{}\r\n--b--", ["application/json"]),
        (b"--b\r\nContent-Type: application/json\r\n\r\n{nope\r\n--b--", ["not valid json"]),
        (b"--b\r\nContent-Type: application/json\r\n\r\n\r\n--b--", ["not valid json"]),
        (b"--b\r\nContent-Type: \xff\r\n\r\n{}\r\n--b--", ["utf-8"]),
    ],
)
def test_malformed_bodies(body: bytes, words: list[str]) -> None:
    with pytest.raises(XAPIError) as excinfo:
        parse_multipart(body, "multipart/mixed; boundary=b")
    assert_400(excinfo, *words)


def test_first_part_must_be_json_even_if_a_later_part_is() -> None:
    body = simple_body(
        b"Content-Type: application/json",
        b"X-Experience-API-Hash: " + TEXT_SHA.encode(),
        b"",
        TEXT,
        first_type=b"text/plain",
    )
    with pytest.raises(XAPIError) as excinfo:
        parse_multipart(body, "multipart/mixed; boundary=b")
    assert_400(excinfo, "first part", "application/json")


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        ([b"Content-Type: text/plain", b"", TEXT], ["part 2", "X-Experience-API-Hash"]),
        ([b"X-Experience-API-Hash:", b"", TEXT], ["part 2", "X-Experience-API-Hash"]),
        ([b"X-Experience-API-Hash: xyz", b"", TEXT], ["part 2", "not a hex sha-2"]),
        ([b"X-Experience-API-Hash: abcd", b"", TEXT], ["part 2", "not a hex sha-2"]),
        (
            [
                b"X-Experience-API-Hash: " + TEXT_SHA.encode(),
                b"Content-Transfer-Encoding: base64",
                b"",
                TEXT,
            ],
            ["part 2", "Content-Transfer-Encoding", "binary"],
        ),
        (
            [
                b"X-Experience-API-Hash: " + TEXT_SHA.encode(),
                b"X-Experience-API-Hash: " + TEXT_SHA.encode(),
                b"",
                TEXT,
            ],
            ["part 2", "repeats"],
        ),
    ],
)
def test_bad_attachment_part_headers(lines: list[bytes], words: list[str]) -> None:
    with pytest.raises(XAPIError) as excinfo:
        parse_multipart(simple_body(*lines), "multipart/mixed; boundary=b")
    assert_400(excinfo, *words)


def test_folded_header_lines_are_joined() -> None:
    body = simple_body(
        b"X-Experience-API-Hash: " + TEXT_SHA.encode(),
        b"Content-Type: text/plain;",
        b"  charset=ascii",
        b"",
        TEXT,
    )
    _, parts = parse_multipart(body, "multipart/mixed; boundary=b")
    assert parts[0].content_type == "text/plain; charset=ascii"


# --------------------------------------------------------------------- check_attachments


def test_sha2_mismatch_is_rejected() -> None:
    lying = Part(
        headers={"x-experience-api-hash": sha256(b"other")},
        content_type="application/octet-stream",
        sha2=sha256(b"other"),
        data=TEXT,
    )
    with pytest.raises(XAPIError) as excinfo:
        check_attachments([statement(declaration(b"other"))], [lying])
    assert_400(excinfo, "part 2", "does not match the sha-2 of its data", sha256(TEXT))


def test_extra_part_is_rejected() -> None:
    extra = b"nobody declared me"
    with pytest.raises(XAPIError) as excinfo:
        check_attachments([statement(declaration(TEXT))], [part(TEXT), part(extra)])
    assert_400(excinfo, "part 3", sha256(extra), "matches no attachment")


def test_missing_part_is_rejected() -> None:
    other = b"the second attachment"
    with pytest.raises(XAPIError) as excinfo:
        check_attachments([statement(declaration(TEXT), declaration(other))], [part(TEXT)])
    assert_400(excinfo, "statement[0].attachments[1]", "no fileUrl", sha256(other))


def test_file_url_only_attachments_need_no_part() -> None:
    # Part Three §1.5.2.s3.b9.
    declared = declaration(TEXT, fileUrl="http://example.com/file.txt")
    assert check_attachments([statement(declared)], []) == {}
    # ... but may still come with their data.
    assert set(check_attachments([statement(declared)], [part(TEXT)])) == {TEXT_SHA}


def test_one_part_serves_several_statements_and_duplicates_are_tolerated() -> None:
    statements = [statement(declaration(TEXT)), statement(declaration(TEXT))]
    assert set(check_attachments(statements, [part(TEXT)])) == {TEXT_SHA}
    assert set(check_attachments(statements, [part(TEXT), part(TEXT)])) == {TEXT_SHA}


def test_substatement_attachments_need_their_parts_too() -> None:
    inner = b"substatement data"
    outer = statement()
    outer["object"] = {"objectType": "SubStatement", **statement(declaration(inner))}
    paths = [path for path, _ in declared_attachments([outer])]
    assert paths == ["statement[0].object.attachments[0]"]
    with pytest.raises(XAPIError) as excinfo:
        check_attachments([outer], [])
    assert_400(excinfo, "statement[0].object.attachments[0]")
    assert set(check_attachments([outer], [part(inner)])) == {sha256(inner)}


def test_other_sha2_lengths_and_cases() -> None:
    digest = hashlib.sha512(TEXT).hexdigest()
    declared = {**declaration(TEXT), "sha2": digest.upper()}
    sent = Part(
        headers={"x-experience-api-hash": digest},
        content_type="application/octet-stream",
        sha2=digest,
        data=TEXT,
    )
    assert check_attachments(statement(declared), [sent]) == {digest: sent}


def test_part_headers_must_agree_with_the_declaration() -> None:
    # Part Three §1.5.2.s2.b2.b7.
    with pytest.raises(XAPIError) as excinfo:
        check_attachments([statement(declaration(TEXT, "image/png"))], [part(TEXT, "text/plain")])
    assert_400(excinfo, "statement[0].attachments[0].contentType", "image/png", "text/plain")

    declared = {**declaration(TEXT), "length": 99}
    with pytest.raises(XAPIError) as excinfo:
        check_attachments([statement(declared)], [part(TEXT, content_length=str(len(TEXT)))])
    assert_400(excinfo, "statement[0].attachments[0].length", "99")

    with pytest.raises(XAPIError) as excinfo:
        check_attachments([statement(declaration(TEXT))], [part(TEXT, content_length="3")])
    assert_400(excinfo, "part 2", "content-length")


def test_statement_without_sha2_is_rejected() -> None:
    declared = declaration(TEXT)
    del declared["sha2"]
    with pytest.raises(XAPIError) as excinfo:
        check_attachments([statement(declared)], [])
    assert_400(excinfo, "statement[0].attachments[0].sha2")


# ------------------------------------------------------------ require_no_raw_attachments


def test_application_json_requires_file_urls() -> None:
    require_no_raw_attachments([statement()])
    require_no_raw_attachments(statement(declaration(TEXT, fileUrl="http://example.com/f")))
    with pytest.raises(XAPIError) as excinfo:
        require_no_raw_attachments(
            [statement(declaration(TEXT, fileUrl="http://example.com/f"), declaration(TEXT))]
        )
    assert_400(excinfo, "statement[0].attachments[1]", "fileUrl", "multipart/mixed")

    outer = statement()
    outer["object"] = {"objectType": "SubStatement", **statement(declaration(TEXT))}
    with pytest.raises(XAPIError) as excinfo:
        require_no_raw_attachments([outer])
    assert_400(excinfo, "statement[0].object.attachments[0]")
