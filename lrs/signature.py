"""Signed statements (xAPI 1.0.3 Part Two §2.6): verified as an LRS, made as a provider.

A signed statement carries a JSON Web Signature (RFC 7515) as an attachment with usage type
``http://adlnet.gov/expapi/attachments/signature`` and content type
``application/octet-stream`` (Part Two §2.6.s4.b1). Its payload is the statement as it was
before the signature was added (§2.6.s4.b3).

What the LRS checks, and the decisions taken where the specification leaves room:

* The JWS must decode (§2.6.s5.b3.b1). JWS Compact Serialization is what providers SHOULD*
  send (§2.6.s4.b2); the JSON serializations are "strongly discouraged" but not forbidden,
  so they are accepted too (every signature in them is checked).
* The algorithm MUST be RS256, RS384 or RS512 (§2.6.s4.b4); anything else — HS256, none,
  ES256, PS256 — is a malformed signature and rejected with 400 (§2.6.s5.b1).
* The payload must be a JSON object "logically equivalent" to the received statement
  (§2.6.s5.b3.b2) under the Statement Comparison Requirements (Part Two §2.3.1.s9): a
  difference is ignored only if it could come from an exception to immutability
  (§2.3.1.b1 to b7) *for a statement as it is received*:

  - ``authority`` and ``stored`` are ignored: the LRS assigns them (§2.3.1.b1, §2.4.9.s3.b4);
  - ``id``, ``timestamp`` and ``version`` are ignored when one side lacks them (the LRS
    fills them in, §2.3.1.b1); when both have them they must agree — ``id`` ignoring case,
    ``timestamp`` as the same instant to the millisecond (§2.3.1.b4, §4.5.s1.b7);
  - attachments with the signature usage type are set aside on both sides: the payload is
    the statement "before the signature was added" (§2.6.s4.b3); the other attachments
    must match, in order;
  - the members of a Group compare as an unordered list (§2.3.1.b5) and the domain of a
    ``mbox`` without regard to case (§2.3.1.b7) — except inside ``extensions``, whose
    values are opaque;
  - the Verb's ``display`` and Activity Definitions are compared: they are excluded from
    immutability because the LRS may return other versions of them later (§2.3.1.b2 and b3),
    but a statement being received has not been through the LRS, so a difference there
    is a real difference between what was signed and what was sent.

  Values compare as parsed JSON: ``1`` equals ``1.0``, key order and whitespace do not
  matter, ``true`` does not equal ``1``.
* If the JWS header has ``x5c``, the signature MUST verify against the first certificate's
  public key (§2.6.s5.b3.b3). Neither the chain, nor validity dates, nor trust are checked:
  the note after §2.6.s5 says this step is "intended as a way to catch mistakes in the
  signature, not as a security measure" (the specification's own Appendix D certificate
  expired in 2014).
* Without ``x5c`` there is nothing to verify the signature with, and the LRS only MUST
  validate "If the JWS header includes an X.509 certificate", so such a signature is
  accepted once it is structurally sound (three base64url segments, an allowed algorithm,
  a matching payload). ``jwk``/``x5u`` headers are not used: fetching keys is out of scope
  and authenticating signers is left to consumers (§2.6.s6.b2).

Cryptography is done by ``jwcrypto`` (JWS parsing and RSA verification) and
``cryptography`` (X.509 decoding); nothing here is hand-rolled.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as _dt
import hashlib
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from .attachments import Part
from .errors import XAPIError

__all__ = [
    "ALLOWED_ALGORITHMS",
    "SIGNATURE_CONTENT_TYPE",
    "SIGNATURE_USAGE_TYPE",
    "is_signature_attachment",
    "sign_statement",
    "signature_attachment",
    "verify_signed_statement",
    "verify_statement_signatures",
]

# Part Two §2.6.s4.b1.
SIGNATURE_USAGE_TYPE = "http://adlnet.gov/expapi/attachments/signature"
SIGNATURE_CONTENT_TYPE = "application/octet-stream"
# Part Two §2.6.s4.b4: "RS256", "RS384" or "RS512".
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512")

# RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature).
_COMPACT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Properties the LRS assigns to a statement it receives (Part Two §2.3.1.b1).
_ALWAYS_IGNORED = ("authority", "stored")
_IGNORED_WHEN_ONE_SIDE_LACKS = ("id", "timestamp", "version")
_UTC = _dt.UTC


def _fail(message: str) -> NoReturn:
    raise XAPIError(message, 400)


def is_signature_attachment(attachment: Mapping[str, Any]) -> bool:
    """Whether an Attachment object declares a statement signature (Part Two §2.6.s4.b1)."""
    return attachment.get("usageType") == SIGNATURE_USAGE_TYPE


# ------------------------------------------------------------------------- comparison


def _instant(value: object) -> object:
    """A timestamp as a UTC instant truncated to milliseconds, or the value unchanged."""
    if not isinstance(value, str):
        return value
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return value
    moment = moment.astimezone(_UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000).isoformat()


def _canonical(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _normalise(value: object, key: str | None = None) -> object:
    """A copy of ``value`` in which differences §2.3.1 allows are evened out."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for name, item in value.items():
            # Extension values are opaque (Part Two §4.1.s3.b2): compared exactly.
            out[name] = item if name == "extensions" else _normalise(item, name)
        if value.get("objectType") == "SubStatement" and "timestamp" in out:
            out["timestamp"] = _instant(out["timestamp"])
        return out
    if isinstance(value, list):
        items = [_normalise(item) for item in value]
        if key == "member":
            # Part Two §2.3.1.b5: the Agents of a Group are not an ordered list.
            items.sort(key=_canonical)
        return items
    if key == "mbox" and isinstance(value, str) and "@" in value:
        # Part Two §2.3.1.b7: the domain of an e-mail address is case-insensitive.
        local, _, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}"
    return value


def _comparable(statement: Mapping[str, Any], other: Mapping[str, Any]) -> object:
    out = {k: v for k, v in statement.items() if k not in _ALWAYS_IGNORED}
    for name in _IGNORED_WHEN_ONE_SIDE_LACKS:
        if name not in statement or name not in other:
            out.pop(name, None)
    if isinstance(out.get("id"), str):
        out["id"] = out["id"].lower()  # a UUID's hex digits are case-insensitive
    if "timestamp" in out:
        out["timestamp"] = _instant(out["timestamp"])
    _drop_signature_attachments(out)
    return _normalise(out)


def _same_scalar(signed: object, received: object) -> bool:
    if isinstance(signed, bool) or isinstance(received, bool):
        return type(signed) is type(received) and signed == received
    return signed == received


def _first_difference(signed: object, received: object, path: str) -> str | None:
    """Where ``signed`` (the JWS payload) and ``received`` (the statement) first differ."""
    if isinstance(signed, dict) and isinstance(received, dict):
        for name in sorted(signed.keys() | received.keys()):
            if name not in received:
                return f"{path}.{name} is signed but missing from the statement"
            if name not in signed:
                return f"{path}.{name} is in the statement but not in the signed payload"
            found = _first_difference(signed[name], received[name], f"{path}.{name}")
            if found:
                return found
        return None
    if isinstance(signed, list) and isinstance(received, list):
        if len(signed) != len(received):
            return f"{path} has {len(received)} items, the signed payload {len(signed)}"
        for index, (a, b) in enumerate(zip(signed, received, strict=True)):
            found = _first_difference(a, b, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(signed, dict | list) or isinstance(received, dict | list):
        return f"{path} differs from the signed payload"
    if not _same_scalar(signed, received):
        return f"{path} differs from the signed payload"
    return None


# ------------------------------------------------------------------------ verification


def _decode_jws(jws_bytes: bytes) -> tuple[jws.JWS, list[dict[str, Any]]]:
    """Parse the JWS and return it with one merged header per signature."""
    try:
        text = bytes(jws_bytes).decode("ascii").strip()
    except UnicodeDecodeError:
        _fail("signature attachment is not a JWS: it is not ASCII text")
    if not text:
        _fail("signature attachment is empty")
    # Part Two §2.6.s4.b2: JWS Compact Serialization (a JSON serialization starts with "{").
    if not text.startswith("{") and (
        not _COMPACT_RE.fullmatch(text) or any(len(segment) % 4 == 1 for segment in text.split("."))
    ):
        _fail(
            "signature attachment is not a well-formed JWS Compact Serialization "
            "(three base64url segments joined by '.')"
        )
    token = jws.JWS()
    try:
        token.deserialize(text)
    except (JWException, ValueError, TypeError, KeyError) as exc:
        _fail(f"signature attachment is not a valid JWS: {exc}")
    headers = token.jose_header
    headers = headers if isinstance(headers, list) else [headers]
    if not headers or not all(isinstance(h, dict) for h in headers):
        _fail("signature attachment has no JWS header")
    entries = token.objects.get("signatures", [token.objects])
    if not all(entry.get("signature") for entry in entries):
        _fail("signature attachment has an empty JWS signature")
    return token, headers


def _x5c_key(header: Mapping[str, Any]) -> jwk.JWK | None:
    """The public key of the first certificate in ``x5c``, or ``None`` without ``x5c``."""
    if "x5c" not in header:
        return None
    chain = header["x5c"]
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        _fail("JWS header x5c must be a non-empty array of base64 certificates")
    try:
        # RFC 7515 §4.1.6: base64 (not base64url) DER.
        certificate = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
        public_key = certificate.public_key()
    except (binascii.Error, ValueError, UnsupportedAlgorithm) as exc:
        _fail(f"JWS header x5c[0] is not a base64 DER X.509 certificate: {exc}")
    if not isinstance(public_key, rsa.RSAPublicKey):
        _fail("the certificate in JWS header x5c[0] does not hold an RSA public key")
    return jwk.JWK.from_pyca(public_key)


def verify_signed_statement(statement: Mapping[str, Any], jws_bytes: bytes) -> None:
    """Check a statement's JWS signature as Part Two §2.6.s5.b3 requires; raise 400 if bad.

    ``statement`` is the statement as received (its signature attachment included or
    not); ``jws_bytes`` is the raw data of the signature attachment. See the module
    docstring for what is compared and why. Returns ``None`` when the signature is well
    formed; raises ``XAPIError`` (400, §2.6.s5.b1) with a message saying what is wrong
    (§2.6.s5.b2) otherwise.
    """
    token, headers = _decode_jws(jws_bytes)
    for header in headers:
        algorithm = header.get("alg")
        if algorithm is None:
            _fail("JWS header has no 'alg'; a statement signature uses RS256, RS384 or RS512")
        if algorithm not in ALLOWED_ALGORITHMS:
            _fail(
                f"JWS algorithm {algorithm!r} is not allowed for a statement signature; "
                "it must be RS256, RS384 or RS512"
            )
    # §2.6.s5.b3.b1 / §2.6.s4.b3: the payload is a JSON serialization of the statement.
    raw_payload = token.objects.get("payload")
    try:
        payload = orjson.loads(raw_payload) if raw_payload else None
    except orjson.JSONDecodeError as exc:
        _fail(f"JWS payload is not a valid JSON serialization of a statement: {exc}")
    if not isinstance(payload, dict):
        _fail("JWS payload is not a JSON object, so it cannot be the signed statement")
    # §2.6.s5.b3.b2: the signed statement is logically equivalent to the received one.
    try:
        difference = _first_difference(
            _comparable(payload, statement), _comparable(statement, payload), "statement"
        )
    except RecursionError:
        _fail("JWS payload or statement is too deeply nested to compare")
    if difference:
        _fail(f"JWS payload does not match the statement: {difference}")
    # §2.6.s5.b3.b3: validate against the X.509 certificate when the header includes one.
    token.allowed_algs = list(ALLOWED_ALGORITHMS)
    for header in headers:
        key = _x5c_key(header)
        if key is None:
            continue
        try:
            token.verify(key)
        except JWException:
            _fail(
                "JWS signature does not verify against the public key of the certificate "
                "in its x5c header"
            )


def verify_statement_signatures(
    statements: list[dict[str, Any]] | dict[str, Any], parts: Mapping[str, Part | bytes]
) -> None:
    """Verify every signature attachment of ``statements`` against its part's data.

    ``parts`` maps lower-cased sha2 to a ``Part`` (what ``check_attachments`` returns) or to
    raw bytes. A signature attachment MUST be ``application/octet-stream``
    (§2.6.s4.b1). Only top-level statements are considered: §2.6 signs Statements, and a
    SubStatement's payload would have nothing to be compared with. A signature declared
    with only a ``fileUrl`` and no part cannot be checked and is let through (its data is
    not in the request; consumers must not trust it blindly anyway, §2.6.s6.b2).
    """
    items = [statements] if isinstance(statements, Mapping) else statements
    for index, statement in enumerate(items):
        if not isinstance(statement, Mapping):
            continue
        attachments = statement.get("attachments")
        if not isinstance(attachments, list):
            continue
        for position, attachment in enumerate(attachments):
            if not (isinstance(attachment, Mapping) and is_signature_attachment(attachment)):
                continue
            path = f"statement[{index}].attachments[{position}]"
            if attachment.get("contentType") != SIGNATURE_CONTENT_TYPE:
                _fail(
                    f"{path}.contentType must be {SIGNATURE_CONTENT_TYPE!r} for a signature, "
                    f"got {attachment.get('contentType')!r}"
                )
            sha2 = attachment.get("sha2")
            found = parts.get(sha2.lower()) if isinstance(sha2, str) else None
            if found is None:
                if attachment.get("fileUrl"):
                    continue
                _fail(f"{path}: the signature's data is missing from the request")
            data = found.data if isinstance(found, Part) else found
            try:
                verify_signed_statement(statement, data)
            except XAPIError as exc:
                raise XAPIError(f"{path}: {exc.message}", 400) from None


def _drop_signature_attachments(out: dict[str, Any]) -> None:
    """Remove signature attachments (and an emptied list); keep anything else as it is."""
    attachments = out.pop("attachments", None)
    if isinstance(attachments, list):
        kept = [
            a for a in attachments if not (isinstance(a, Mapping) and is_signature_attachment(a))
        ]
        if kept:
            out["attachments"] = kept
    elif attachments is not None:
        out["attachments"] = attachments


# --------------------------------------------------------------------------- signing


def _unsigned(statement: Mapping[str, Any]) -> dict[str, Any]:
    """The statement as it was before any signature was added (§2.6.s4.b3)."""
    out = copy.deepcopy(dict(statement))
    _drop_signature_attachments(out)
    return out


def sign_statement(
    statement: Mapping[str, Any],
    private_key_pem: bytes,
    cert_pem: bytes | None = None,
    alg: str = "RS256",
) -> bytes:
    """Sign ``statement`` as a Learning Record Provider; returns a JWS Compact Serialization.

    The payload is the statement without any signature attachment (§2.6.s4.b3), serialized
    with orjson; the algorithm is RS256/384/512 (§2.6.s4.b4); when ``cert_pem`` is given
    (one certificate or a chain, leaf first) its DER forms go in the ``x5c`` header
    (§2.6.s4.b5/b6). Add the result to the statement with ``signature_attachment`` and
    send it as a multipart part. Raises ``ValueError`` for a wrong algorithm, a key that
    is not a private RSA key, or a certificate that does not belong to the key.
    """
    if alg not in ALLOWED_ALGORITHMS:
        raise ValueError(f"alg must be one of {ALLOWED_ALGORITHMS}, got {alg!r}")
    private_key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError("a statement signature needs an RSA private key (Part Two §2.6.s4.b4)")
    header: dict[str, Any] = {"alg": alg}
    if cert_pem is not None:
        certificates = x509.load_pem_x509_certificates(cert_pem)
        leaf_key = certificates[0].public_key()
        if not isinstance(leaf_key, rsa.RSAPublicKey) or (
            leaf_key.public_numbers() != private_key.public_key().public_numbers()
        ):
            raise ValueError("the first certificate does not belong to the private key")
        header["x5c"] = [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for c in certificates
        ]
    token = jws.JWS(orjson.dumps(_unsigned(statement)))
    token.add_signature(
        jwk.JWK.from_pyca(private_key), alg=alg, protected=orjson.dumps(header).decode()
    )
    return token.serialize(compact=True).encode("ascii")


def signature_attachment(
    jws_bytes: bytes,
    display: Mapping[str, str] | None = None,
    description: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Attachment object that declares ``jws_bytes`` as a statement signature.

    Usage type and content type per Part Two §2.6.s4.b1; ``length`` and ``sha2`` (SHA-256)
    per §2.4.11, so the LRS can match the part carrying ``jws_bytes`` (Part Three
    §1.5.2.s1.b4).
    """
    attachment: dict[str, Any] = {
        "usageType": SIGNATURE_USAGE_TYPE,
        "display": dict(display or {"en-US": "Signature"}),
        "contentType": SIGNATURE_CONTENT_TYPE,
        "length": len(jws_bytes),
        "sha2": hashlib.sha256(jws_bytes).hexdigest(),
    }
    if description:
        attachment["description"] = dict(description)
    return attachment
