"""xAPI 1.0.3 attachments: the ``multipart/mixed`` transmission format and its rules.

Section references point into adlnet/xAPI-Spec 1.0.3: "Part Two" is ``xAPI-Data.md``
(§2.4.11 Attachments), "Part Three" is ``xAPI-Communication.md`` (§1.5 Content Types).

What this module does, and why it is written this way:

* ``parse_multipart`` splits a request body by hand instead of going through
  ``email.parser``: attachment data is raw octets (Part Three §1.5.2.s6.b3, "no encoding
  would be done"), so the splitter works on ``bytes`` with ``bytes.find`` and never decodes,
  re-wraps or normalises a body. Only headers are decoded.
* It follows RFC 2046 §5.1.1 (the definition Part Three §1.5.2.s2.b2 points to) and is
  lenient where real clients differ from it, since rejecting them would lose learning
  records: a bare LF is accepted where CRLF is due (test suites and PHP clients build bodies
  with ``PHP_EOL``/``\\n``), header lines need no space after the colon (the spec's own example
  has none), transport padding after a boundary is skipped, and preamble/epilogue are ignored.
* A missing ``Content-Transfer-Encoding`` on an attachment part is accepted as ``binary``:
  the provider MUST send it (Part Three §1.5.2.s2.b2.b4) but the LRS "SHOULD assume a
  Content-Transfer-Encoding of binary" (§1.5.2.s3.b6). A part that declares any *other*
  encoding is rejected, because its octets are then not the attachment's data.
* ``check_attachments`` matches parts to declarations only by SHA-2 (Part Three
  §1.5.2.s1.b4 "It MUST not do so any other way"). Providers may use SHA-224/256/384/512
  (Part Three §1.5.2.s4.b4); the algorithm is chosen by the length of the hex digest.
* Every problem raises ``XAPIError`` with status 400 and a message that names the part or
  the statement property at fault (Part Three §3.2, Part Two §2.6.s5.b2 spirit).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any, NoReturn

import orjson

from .errors import XAPIError

__all__ = [
    "Part",
    "build_multipart",
    "check_attachments",
    "declared_attachments",
    "media_type",
    "parse_multipart",
    "require_no_raw_attachments",
    "sha2_hexdigest",
]

HASH_HEADER = "x-experience-api-hash"

# Part Three §1.5.2.s4.b4: SHA-256/384/512 recommended; SHA-224 is SHA-2 as well.
_HASH_BY_HEX_LENGTH = {56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_DIGITS_RE = re.compile(r"[0-9]+")
# Headers whose repetition would make a part ambiguous.
_SINGLE_HEADERS = frozenset({"content-type", "content-transfer-encoding", HASH_HEADER})
_WSP = b" \t"


@dataclass(frozen=True)
class Part:
    """One attachment part of a ``multipart/mixed`` statement request.

    ``sha2`` is the lower-cased ``X-Experience-API-Hash`` header; ``content_type`` is the
    part's ``Content-Type`` (``application/octet-stream`` when the part has none — check
    ``headers`` to tell); ``content_transfer_encoding`` is ``None`` when the header is
    absent (treated as binary, Part Three §1.5.2.s3.b6).
    """

    headers: dict[str, str]
    content_type: str
    sha2: str
    data: bytes = field(repr=False)
    content_transfer_encoding: str | None = None


def _fail(message: str) -> NoReturn:
    raise XAPIError(message, 400)


def media_type(value: str) -> str:
    """The ``type/subtype`` of a Content-Type value, lower-cased, parameters dropped.

    Media types are case-insensitive (RFC 2045 §5.1), so comparisons go through this.
    """
    return value.split(";", 1)[0].strip().lower()


def sha2_hexdigest(data: bytes, like: str) -> str | None:
    """The SHA-2 hex digest of ``data`` in the variant whose length matches ``like``.

    ``None`` when ``like`` is not the hex digest of a SHA-2 variant we know.
    """
    name = _HASH_BY_HEX_LENGTH.get(len(like))
    if name is None or not _HEX_RE.fullmatch(like):
        return None
    return hashlib.new(name, data).hexdigest()


# ------------------------------------------------------------------------------ parsing


def _boundary_from(content_type_header: str) -> str:
    # Part Three §1.5.2.s2.b2: the request "MUST conform to the definition of
    # multipart/mixed in RFC 2046"; the boundary parameter is mandatory (RFC 2046 §5.1.1).
    if media_type(content_type_header or "") != "multipart/mixed":
        _fail(
            "Content-Type must be multipart/mixed to carry attachment data, "
            f"got {content_type_header!r}"
        )
    header = Message()
    header["Content-Type"] = content_type_header
    boundary = header.get_param("boundary")
    if boundary is None:
        _fail("multipart/mixed Content-Type has no boundary parameter")
    boundary = collapse_rfc2231_value(boundary)
    if not boundary or "\r" in boundary or "\n" in boundary:
        _fail(f"multipart/mixed boundary parameter is empty or invalid: {boundary!r}")
    return boundary


def _line_end(body: bytes, pos: int) -> int | None:
    """Index just past the line break at ``pos`` (after optional padding), else ``None``."""
    while pos < len(body) and body[pos] in _WSP:
        pos += 1  # RFC 2046 §5.1.1: transport padding may follow a boundary
    if body.startswith(b"\r\n", pos):
        return pos + 2
    if body.startswith(b"\n", pos):
        return pos + 1
    return None


def _split_parts(body: bytes, boundary: str) -> list[bytes]:
    """The encapsulated parts of ``body``, binary-safe, preamble and epilogue dropped."""
    delimiter = b"--" + boundary.encode("utf-8")
    # The first delimiter starts the body or a line; anything before it is preamble.
    if body.startswith(delimiter):
        pos = 0
    else:
        found = body.find(b"\n" + delimiter)
        if found < 0:
            _fail(f"multipart body contains no boundary delimiter '--{boundary}'")
        pos = found + 1
    parts: list[bytes] = []
    while True:
        after = pos + len(delimiter)
        if body.startswith(b"--", after):
            return parts  # close delimiter; what follows is epilogue
        start = _line_end(body, after)
        if start is None:
            if after >= len(body):
                _fail("multipart body is truncated: it ends without the closing boundary")
            _fail(f"multipart boundary line '--{boundary}' is followed by unexpected data")
        # The delimiter is CRLF "--" boundary (RFC 2046 §5.1.1; Part Three §1.5.2.s6.b4);
        # search from the line break that ended the boundary line so an empty part counts.
        found = body.find(b"\n" + delimiter, start - 1)
        if found < 0:
            _fail("multipart body is truncated: it ends without the closing boundary")
        end = found - 1 if found > start and body[found - 1] == 0x0D else found
        parts.append(body[start : max(start, end)])
        pos = found + 1


def _parse_headers(raw: bytes, label: str) -> tuple[dict[str, str], bytes]:
    """Headers (lower-cased names) and body of one encapsulated part."""
    headers: dict[str, str] = {}
    last: str | None = None
    pos = 0
    while True:
        newline = raw.find(b"\n", pos)
        if newline < 0:
            _fail(f"{label} has no blank line ending its headers")
        line = raw[pos:newline]
        pos = newline + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return headers, raw[pos:]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            _fail(f"{label} has a header line that is not UTF-8 text")
        if text[0] in " \t" and last is not None:
            headers[last] += " " + text.strip()  # folded continuation line (RFC 5322 §2.2.3)
            continue
        name, colon, value = text.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            _fail(f"{label} has a malformed header line {text!r}")
        value = value.strip()
        if name in headers:
            if name in _SINGLE_HEADERS:
                _fail(f"{label} repeats the {name!r} header")
            headers[name] += ", " + value
        else:
            headers[name] = value
        last = name


def parse_multipart(body: bytes, content_type_header: str) -> tuple[object, list[Part]]:
    """Split a ``multipart/mixed`` statement request into its statements and attachment parts.

    Returns the first part parsed as JSON (a Statement object or an array of them; the
    caller validates it) and the remaining parts in order. Raises ``XAPIError`` (400) when
    the request is not well-formed multipart/mixed per Part Three §1.5.2.s2.b2.
    """
    boundary = _boundary_from(content_type_header)
    raw_parts = _split_parts(body, boundary)
    if not raw_parts:
        _fail("multipart body has no parts; the first part must hold the statements")
    headers, statements_bytes = _parse_headers(raw_parts[0], "the first (statements) part")
    # Part Three §1.5.2.s2.b2.b1 / b6: the first part holds the statements as application/json.
    first_type = headers.get("content-type")
    if first_type is None or media_type(first_type) != "application/json":
        _fail(
            "the first part of a multipart/mixed statement request must have "
            f"Content-Type application/json, got {first_type!r}"
        )
    try:
        statements = orjson.loads(statements_bytes)
    except orjson.JSONDecodeError as exc:
        _fail(f"the first (statements) part is not valid JSON: {exc}")

    parts: list[Part] = []
    for index, raw in enumerate(raw_parts[1:], start=1):
        label = f"multipart part {index + 1}"
        part_headers, data = _parse_headers(raw, label)
        # Part Three §1.5.2.s2.b2.b3: every part after the first carries X-Experience-API-Hash.
        sha2 = part_headers.get(HASH_HEADER)
        if not sha2:
            _fail(f"{label} has no X-Experience-API-Hash header")
        if len(sha2) not in _HASH_BY_HEX_LENGTH or not _HEX_RE.fullmatch(sha2):
            _fail(f"{label} X-Experience-API-Hash is not a hex SHA-2 digest: {sha2!r}")
        # Part Three §1.5.2.s2.b2.b4 (MUST send binary) and §1.5.2.s3.b6 (assume binary).
        encoding = part_headers.get("content-transfer-encoding")
        if encoding is not None and encoding.lower() != "binary":
            _fail(f"{label} Content-Transfer-Encoding must be 'binary', got {encoding!r}")
        parts.append(
            Part(
                headers=part_headers,
                content_type=part_headers.get("content-type") or "application/octet-stream",
                sha2=sha2.lower(),
                data=data,
                content_transfer_encoding=encoding.lower() if encoding is not None else None,
            )
        )
    return statements, parts


# ----------------------------------------------------------------------------- checking


def _as_list(statements: object) -> list[Any]:
    if isinstance(statements, Mapping):
        return [statements]
    if isinstance(statements, list | tuple):
        return list(statements)
    return []


def declared_attachments(
    statements: Iterable[Mapping[str, Any]] | Mapping[str, Any],
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every Attachment object declared by ``statements``, with its property path.

    SubStatement attachments are included: Part Two §2.4.11 only *recommends* moving them to
    the enclosing Statement, so a SubStatement may declare raw-data attachments too, and
    their data travels in the same request. Non-dict entries are skipped (validation
    reports them).
    """
    for index, statement in enumerate(_as_list(statements)):
        if not isinstance(statement, Mapping):
            continue
        path = f"statement[{index}]"
        holders: list[tuple[str, Mapping[str, Any]]] = [(path, statement)]
        target = statement.get("object")
        if isinstance(target, Mapping) and target.get("objectType") == "SubStatement":
            holders.append((f"{path}.object", target))
        for holder_path, holder in holders:
            items = holder.get("attachments")
            if not isinstance(items, list):
                continue
            for position, item in enumerate(items):
                if isinstance(item, Mapping):
                    yield f"{holder_path}.attachments[{position}]", item


def _declared_sha2(path: str, attachment: Mapping[str, Any]) -> str:
    sha2 = attachment.get("sha2")
    if not isinstance(sha2, str) or not sha2:
        _fail(f"{path}.sha2 is required")  # Part Two §2.4.11: sha2 is always required
    return sha2.lower()


def require_no_raw_attachments(statements: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> None:
    """Reject an ``application/json`` request whose attachments are not all ``fileUrl``.

    Part Three §1.5.2.s2.b1: an application/json request MUST include a fileUrl for every
    Attachment (the raw data can only travel in multipart/mixed); §1.5.1.s1.b2: such a
    request is accepted when every Attachment has a fileUrl.
    """
    for path, attachment in declared_attachments(statements):
        if not attachment.get("fileUrl"):
            _fail(
                f"{path} has no fileUrl, so its data must be sent as a part of a "
                "multipart/mixed request, not in an application/json one"
            )


def _check_parameter_matches(part: Part, path: str, attachment: Mapping[str, Any]) -> None:
    # Part Three §1.5.2.s2.b2.b7: where a part header and an Attachment property correspond
    # (Content-Type/contentType, Content-Length/length) and both are given, they MUST match.
    # Content types are compared as media types: the spec's own example (§1.5.2.s6) declares
    # "text/plain; charset=ascii" and sends the part as "text/plain".
    header_type = part.headers.get("content-type")
    declared_type = attachment.get("contentType")
    if (
        header_type is not None
        and isinstance(declared_type, str)
        and media_type(header_type) != media_type(declared_type)
    ):
        _fail(
            f"{path}.contentType {declared_type!r} does not match the Content-Type "
            f"{header_type!r} of the part with hash {part.sha2}"
        )
    header_length = part.headers.get("content-length")
    declared_length = attachment.get("length")
    if (
        header_length is not None
        and type(declared_length) is int
        and int(header_length) != declared_length
    ):
        _fail(
            f"{path}.length {declared_length} does not match the Content-Length "
            f"{header_length} of the part with hash {part.sha2}"
        )


def check_attachments(
    statements: list[dict[str, Any]] | dict[str, Any], parts: list[Part]
) -> dict[str, Part]:
    """Match attachment parts to the attachments the statements declare; return sha2 -> Part.

    Rules (Part Three §1.5.2):

    * a part's hash header must be the SHA-2 of its data — otherwise the part could not be
      matched "by comparing the SHA-2 of the raw data" (§1.5.2.s1.b4);
    * every part must belong to some declared Attachment (an extra part is data nobody
      declared: the batch is not in the Transmission Format, §1.5.2.s2.b2.b2);
    * every Attachment without a fileUrl must have a part with its sha2 (§1.5.2.s3.b5);
      one part may serve several declarations (§1.5.2.s2.b2.b5); an Attachment with a
      fileUrl needs no part (§1.5.2.s3.b9) but may still have one;
    * headers that mirror Attachment properties must agree with them (§1.5.2.s2.b2.b7).

    Keys of the result are lower-cased hex digests (hex is case-insensitive); look a
    declaration up with ``attachment["sha2"].lower()``. Raises ``XAPIError`` (400).
    """
    declarations = list(declared_attachments(statements))
    declared: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for path, attachment in declarations:
        declared.setdefault(_declared_sha2(path, attachment), []).append((path, attachment))

    by_sha2: dict[str, Part] = {}
    for index, part in enumerate(parts, start=2):
        label = f"multipart part {index}"
        sha2 = part.sha2.lower()
        header_length = part.headers.get("content-length")
        if header_length is not None and (
            not _DIGITS_RE.fullmatch(header_length) or int(header_length) != len(part.data)
        ):
            _fail(
                f"{label} Content-Length {header_length!r} does not match its "
                f"{len(part.data)} octets of data"
            )
        actual = sha2_hexdigest(part.data, sha2)
        if actual is None:
            _fail(f"{label} X-Experience-API-Hash is not a hex SHA-2 digest: {part.sha2!r}")
        if actual != sha2:
            _fail(
                f"{label} X-Experience-API-Hash {part.sha2} does not match the SHA-2 of its "
                f"data ({actual})"
            )
        if sha2 not in declared:
            _fail(f"{label} (hash {sha2}) matches no attachment declared by the statements")
        by_sha2.setdefault(sha2, part)

    for sha2, holders in declared.items():
        part = by_sha2.get(sha2)
        for path, attachment in holders:
            if part is None:
                if not attachment.get("fileUrl"):
                    _fail(
                        f"{path} has no fileUrl and no multipart part carries data with "
                        f"its sha2 {attachment.get('sha2')}"
                    )
                continue
            _check_parameter_matches(part, path, attachment)
    return by_sha2


# ----------------------------------------------------------------------------- building


def _new_boundary() -> str:
    return "xapi-" + secrets.token_hex(16)


def _check_header_value(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} must not contain a line break: {value!r}")


def build_multipart(
    statements_json: bytes, attachments: list[tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    """Build a ``multipart/mixed`` response body; returns (body, Content-Type header value).

    ``attachments`` holds ``(sha2, content_type, data)`` triples. For GET Statements with
    ``attachments=true`` the LRS MUST use the Transmission Format (Part Three
    §1.5.2.s3.b1): first the statement result as application/json (§1.5.2.s2.b2.b1), then
    one part per distinct sha2 (§1.5.2.s2.b2.b5) with Content-Type, ``Content-Transfer-
    Encoding: binary`` and X-Experience-API-Hash (§1.5.2.s2.b2.b3/b4/b6). The boundary is
    random and regenerated until it occurs in none of the payloads, so no part can be cut
    short by its own data (RFC 2046 §5.1.1).

    Raises ``ValueError`` for a header value containing a line break (header injection).
    """
    unique: dict[str, tuple[str, str, bytes]] = {}
    for sha2, content_type, data in attachments:
        _check_header_value("sha2", sha2)
        _check_header_value("content_type", content_type)
        unique.setdefault(sha2.lower(), (sha2, content_type, data))
    payloads = [statements_json, *(data for _, _, data in unique.values())]
    boundary = _new_boundary()
    while any(boundary.encode("ascii") in payload for payload in payloads):
        boundary = _new_boundary()
    delimiter = b"--" + boundary.encode("ascii")
    chunks = [delimiter, b"\r\nContent-Type: application/json\r\n\r\n", statements_json]
    for sha2, content_type, data in unique.values():
        chunks += [
            b"\r\n",
            delimiter,
            b"\r\nContent-Type: ",
            content_type.encode("utf-8"),
            b"\r\nContent-Transfer-Encoding: binary\r\nX-Experience-API-Hash: ",
            sha2.encode("ascii"),
            b"\r\n\r\n",
            data,
        ]
    chunks += [b"\r\n", delimiter, b"--\r\n"]
    return b"".join(chunks), f"multipart/mixed; boundary={boundary}"
