"""Unit tests for lrs.signature: signed statements (xAPI 1.0.3 Part Two §2.6)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jws

from lrs.attachments import build_multipart, check_attachments, parse_multipart
from lrs.errors import XAPIError
from lrs.signature import (
    SIGNATURE_USAGE_TYPE,
    sign_statement,
    signature_attachment,
    verify_signed_statement,
    verify_statement_signatures,
)

# ------------------------------------------------------------------------------ fixtures


def make_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def self_signed_cert(key) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mastery Hub test provider")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return make_key()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return make_key()


@pytest.fixture(scope="module")
def cert(key) -> x509.Certificate:
    return self_signed_cert(key)


def base_statement() -> dict:
    return {
        "id": "6690e6c9-3ef0-4ed3-8b37-7f3964730bee",
        "actor": {"mbox": "mailto:learner@example.com", "name": "Learner"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed", "display": {"en-US": "done"}},
        "object": {"id": "http://example.com/activities/essay", "objectType": "Activity"},
        "result": {"score": {"scaled": 0.5}, "success": True},
        "timestamp": "2024-05-01T12:00:00.000Z",
    }


def signed(statement: dict, jws_bytes: bytes) -> dict:
    """``statement`` with the signature attachment declared, as a provider would send it."""
    out = copy.deepcopy(statement)
    out.setdefault("attachments", []).append(signature_attachment(jws_bytes))
    return out


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_400(excinfo: pytest.ExceptionInfo[XAPIError], *words: str) -> None:
    assert excinfo.value.status == 400
    for word in words:
        assert word.lower() in excinfo.value.message.lower(), excinfo.value.message


# --------------------------------------------------------------------------- happy path


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_valid_signed_statement_verifies(key, cert, alg: str) -> None:
    statement = base_statement()
    token = sign_statement(statement, private_pem(key), cert_pem(cert), alg=alg)
    header = orjson.loads(base64.urlsafe_b64decode(token.split(b".")[0] + b"=="))
    assert header["alg"] == alg
    assert base64.b64decode(header["x5c"][0]) == cert.public_bytes(serialization.Encoding.DER)
    verify_signed_statement(signed(statement, token), token)


def test_signature_without_x5c_is_accepted_structurally(key) -> None:
    # Part Two §2.6.s5.b3.b3 only requires verification when a certificate is included
    # (the ADL conformance suite signs without x5c and expects 200).
    statement = base_statement()
    token = sign_statement(statement, private_pem(key))
    assert "x5c" not in orjson.loads(base64.urlsafe_b64decode(token.split(b".")[0] + b"=="))
    verify_signed_statement(signed(statement, token), token)


def test_full_multipart_pipeline(key, cert) -> None:
    essay = b"My essay\r\n--with dashes--\r\n"
    statement = base_statement()
    statement["attachments"] = [
        {
            "usageType": "http://example.com/usage/essay",
            "display": {"en-US": "Essay"},
            "contentType": "text/plain",
            "length": len(essay),
            "sha2": hashlib.sha256(essay).hexdigest(),
        }
    ]
    token = sign_statement(statement, private_pem(key), cert_pem(cert))
    sent = signed(statement, token)
    body, content_type = build_multipart(
        orjson.dumps([sent]),
        [
            (hashlib.sha256(essay).hexdigest(), "text/plain", essay),
            (hashlib.sha256(token).hexdigest(), "application/octet-stream", token),
        ],
    )
    statements, parts = parse_multipart(body, content_type)
    verify_statement_signatures(statements, check_attachments(statements, parts))


def test_lrs_assigned_and_reserialised_properties_are_ignored(key, cert) -> None:
    original = base_statement()
    del original["id"]
    token = sign_statement(original, private_pem(key), cert_pem(cert))
    received = signed(original, token)
    # The LRS assigns id/stored/authority/version (Part Two §2.3.1.b1) ...
    received["id"] = "0c7a8f47-5a3f-4d0e-9f3b-4f2b8e1a6a10"
    received["stored"] = "2024-05-01T12:00:01.000Z"
    received["version"] = "1.0.0"
    received["authority"] = {"account": {"homePage": "http://lrs.example", "name": "p1"}}
    # ... and may serialise the same instant differently (§2.3.1.b4).
    received["timestamp"] = "2024-05-01T14:00:00+02:00"
    verify_signed_statement(received, token)


def test_group_member_order_and_mbox_domain_case_are_ignored(key) -> None:
    original = base_statement()
    original["actor"] = {
        "objectType": "Group",
        "member": [{"mbox": "mailto:a@Example.COM"}, {"mbox": "mailto:b@example.com"}],
    }
    token = sign_statement(original, private_pem(key))
    received = signed(original, token)
    received["actor"]["member"] = [
        {"mbox": "mailto:b@example.com"},
        {"mbox": "mailto:a@example.com"},
    ]
    verify_signed_statement(received, token)


def test_numbers_compare_as_json_values(key) -> None:
    original = base_statement()
    original["result"]["score"] = {"raw": 1}
    token = sign_statement(original, private_pem(key))
    received = signed(original, token)
    received["result"]["score"] = {"raw": 1.0}
    verify_signed_statement(received, token)
    received["result"]["success"] = 1
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(received, token)
    assert_400(excinfo, "statement.result.success")


# ------------------------------------------------------------------ specification vector

# Part Two Appendix D: the example JWS (pretty-printed header and payload with CRLFs, an
# x5c chain with a 1024-bit key whose certificate expired in 2014). Its SHA-256 is the
# sha2 the appendix declares; the appendix's "length" (4235) is off by four.
APPENDIX_D_JWS = (
    "ew0KICAgICJhbGciOiAiUlMyNTYiLA0KICAgICJ4NWMiOiBbDQogICAgICAgICJNSUlEQVRDQ0FtcWdBd0lCQWdJ"
    "SkFNQjFjc051QTYra01BMEdDU3FHU0liM0RRRUJCUVVBTUhFeEN6QUpCZ05WQkFZVEFsVlRNUkl3RUFZRFZRUUlF"
    "d2xVWlc1dVpYTnpaV1V4R0RBV0JnTlZCQW9URDBWNFlXMXdiR1VnUTI5dGNHRnVlVEVRTUE0R0ExVUVBeE1IUlho"
    "aGJYQnNaVEVpTUNBR0NTcUdTSWIzRFFFSkFSWVRaWGhoYlhCc1pVQmxlR0Z0Y0d4bExtTnZiVEFlRncweE16QTBN"
    "RFF4TlRJNE16QmFGdzB4TkRBME1EUXhOVEk0TXpCYU1JR1dNUXN3Q1FZRFZRUUdFd0pWVXpFU01CQUdBMVVFQ0JN"
    "SlZHVnVibVZ6YzJWbE1SRXdEd1lEVlFRSEV3aEdjbUZ1YTJ4cGJqRVlNQllHQTFVRUNoTVBSWGhoYlhCc1pTQkRi"
    "MjF3WVc1NU1SQXdEZ1lEVlFRTEV3ZEZlR0Z0Y0d4bE1SQXdEZ1lEVlFRREV3ZEZlR0Z0Y0d4bE1TSXdJQVlKS29a"
    "SWh2Y05BUWtCRmhObGVHRnRjR3hsUUdWNFlXMXdiR1V1WTI5dE1JR2ZNQTBHQ1NxR1NJYjNEUUVCQVFVQUE0R05B"
    "RENCaVFLQmdRRGp4dlpYRjMwV0w0b0tqWllYZ1IwWnlhWCt1M3k2K0pxVHFpTmtGYS9WVG5ldDZMeTJPVDZabW1j"
    "SkVQbnEzVW5ld3BIb09RK0dmaGhUa1cxM2owNmo1aU5uNG9iY0NWV1RMOXlYTnZKSCtLbyt4dTRZbC95U1BScklQ"
    "eVRqdEhkRzBNMlh6SWxtbUxxbStDQVMrS0NiSmVINHRmNTQza0lXQzVwQzVwM2NWUUlEQVFBQm8zc3dlVEFKQmdO"
    "VkhSTUVBakFBTUN3R0NXQ0dTQUdHK0VJQkRRUWZGaDFQY0dWdVUxTk1JRWRsYm1WeVlYUmxaQ0JEWlhKMGFXWnBZ"
    "MkYwWlRBZEJnTlZIUTRFRmdRVVZzM3Y1YWZFZE9lb1llVmFqQVFFNHYwV1MxUXdId1lEVlIwakJCZ3dGb0FVeVZJ"
    "YzN5dnJhNEVCejIwSTRCRjM5SUFpeEJrd0RRWUpLb1pJaHZjTkFRRUZCUUFEZ1lFQWdTL0ZGNUQwSG5qNDRydlQ2"
    "a2duM2tKQXZ2MmxqL2Z5anp0S0lyWVMzM2xqWEduNmdHeUE0cXRiWEEyM1ByTzR1Yy93WUNTRElDRHBQb2JoNjJ4"
    "VENkOXFPYktoZ3dXT2kwNVBTQkxxVXUzbXdmQWUxNUxKQkpCcVBWWjRLMGtwcGVQQlU4bTZhSVpvSDU3TC85dDRP"
    "b2FMOHlLcy9xaktGZUkxT0ZXWnh2QT0iLA0KICAgICAgICAiTUlJRE56Q0NBcUNnQXdJQkFnSUpBTUIxY3NOdUE2"
    "K2pNQTBHQ1NxR1NJYjNEUUVCQlFVQU1IRXhDekFKQmdOVkJBWVRBbFZUTVJJd0VBWURWUVFJRXdsVVpXNXVaWE56"
    "WldVeEdEQVdCZ05WQkFvVEQwVjRZVzF3YkdVZ1EyOXRjR0Z1ZVRFUU1BNEdBMVVFQXhNSFJYaGhiWEJzWlRFaU1D"
    "QUdDU3FHU0liM0RRRUpBUllUWlhoaGJYQnNaVUJsZUdGdGNHeGxMbU52YlRBZUZ3MHhNekEwTURReE5USTFOVE5h"
    "RncweU16QTBNREl4TlRJMU5UTmFNSEV4Q3pBSkJnTlZCQVlUQWxWVE1SSXdFQVlEVlFRSUV3bFVaVzV1WlhOelpX"
    "VXhHREFXQmdOVkJBb1REMFY0WVcxd2JHVWdRMjl0Y0dGdWVURVFNQTRHQTFVRUF4TUhSWGhoYlhCc1pURWlNQ0FH"
    "Q1NxR1NJYjNEUUVKQVJZVFpYaGhiWEJzWlVCbGVHRnRjR3hsTG1OdmJUQ0JuekFOQmdrcWhraUc5dzBCQVFFRkFB"
    "T0JqUUF3Z1lrQ2dZRUExc0JuQldQWjBmN1dKVUZUSnk1KzAxU2xTNVo2RERENlV5ZTl2SzlBeWNnVjVCMytXQzhI"
    "QzV1NWg5MU11akFDMUFSUFZVT3RzdlBSczQ1cUtORklnSUdSWEtQQXdaamF3RUkyc0NKUlNLVjQ3aTZCOGJEdjRX"
    "a3VHdlFhdmVaR0kwcWxtTjVSMUVpbTJnVUl0UmoxaGdjQzlyUWF2amxuRktEWTJybFhHdWtDQXdFQUFhT0IxakNC"
    "MHpBZEJnTlZIUTRFRmdRVXlWSWMzeXZyYTRFQnoyMEk0QkYzOUlBaXhCa3dnYU1HQTFVZEl3U0JtekNCbUlBVXlW"
    "SWMzeXZyYTRFQnoyMEk0QkYzOUlBaXhCbWhkYVJ6TUhFeEN6QUpCZ05WQkFZVEFsVlRNUkl3RUFZRFZRUUlFd2xV"
    "Wlc1dVpYTnpaV1V4R0RBV0JnTlZCQW9URDBWNFlXMXdiR1VnUTI5dGNHRnVlVEVRTUE0R0ExVUVBeE1IUlhoaGJY"
    "QnNaVEVpTUNBR0NTcUdTSWIzRFFFSkFSWVRaWGhoYlhCc1pVQmxlR0Z0Y0d4bExtTnZiWUlKQU1CMWNzTnVBNitq"
    "TUF3R0ExVWRFd1FGTUFNQkFmOHdEUVlKS29aSWh2Y05BUUVGQlFBRGdZRUFEaHdUZWJHazczNXlLaG04RHFDeHZO"
    "bkVaME54c1lFWU9qZ1JHMXlYVGxXNXBFNjkxZlNINUFaK1Q2ZnB3cFpjV1k1UVlrb042RG53ak94R2tTZlFDMy95"
    "R21jVURLQlB3aVo1TzJzOUMrZkUxa1VFbnJYMlhlYTRhZ1ZuZ016UjhEUTZvT2F1TFdxZWhEQitnMkVOV1JMb1Zn"
    "UyttYTUvWWNzMEdUeXJFQ1k9Ig0KICAgIF0NCn0.ew0KICAgICJ2ZXJzaW9uIjogIjEuMC4wIiwNCiAgICAiaWQi"
    "OiAiMzNjZmY0MTYtZTMzMS00YzlkLTk2OWUtNTM3M2ExNzU2MTIwIiwNCiAgICAiYWN0b3IiOiB7DQogICAgICAg"
    "ICJtYm94IjogIm1haWx0bzpleGFtcGxlQGV4YW1wbGUuY29tIiwNCiAgICAgICAgIm5hbWUiOiAiRXhhbXBsZSBM"
    "ZWFybmVyIiwNCiAgICAgICAgIm9iamVjdFR5cGUiOiAiQWdlbnQiDQogICAgfSwNCiAgICAidmVyYiI6IHsNCiAg"
    "ICAgICAgImlkIjogImh0dHA6Ly9hZGxuZXQuZ292L2V4cGFwaS92ZXJicy9leHBlcmllbmNlZCIsDQogICAgICAg"
    "ICJkaXNwbGF5Ijogew0KICAgICAgICAgICAgImVuLVVTIjogImV4cGVyaWVuY2VkIg0KICAgICAgICB9DQogICAg"
    "fSwNCiAgICAib2JqZWN0Ijogew0KICAgICAgICAiaWQiOiAiaHR0cHM6Ly93d3cueW91dHViZS5jb20vd2F0Y2g_"
    "dj14aDRrSWlIM1NtOCIsDQogICAgICAgICJvYmplY3RUeXBlIjogIkFjdGl2aXR5IiwNCiAgICAgICAgImRlZmlu"
    "aXRpb24iOiB7DQogICAgICAgICAgICAibmFtZSI6IHsNCiAgICAgICAgICAgICAgICAiZW4tVVMiOiAiVGF4IFRp"
    "cHMgJiBJbmZvcm1hdGlvbiA6IEhvdyB0byBGaWxlIGEgVGF4IFJldHVybiAiDQogICAgICAgICAgICB9LA0KICAg"
    "ICAgICAgICAgImRlc2NyaXB0aW9uIjogew0KICAgICAgICAgICAgICAgICJlbi1VUyI6ICJGaWxpbmcgYSB0YXgg"
    "cmV0dXJuIHdpbGwgcmVxdWlyZSBmaWxsaW5nIG91dCBlaXRoZXIgYSAxMDQwLCAxMDQwQSBvciAxMDQwRVogZm9y"
    "bSINCiAgICAgICAgICAgIH0NCiAgICAgICAgfQ0KICAgIH0sDQogICAgInRpbWVzdGFtcCI6ICIyMDEzLTA0LTAx"
    "VDEyOjAwOjAwWiINCn0.FWuwaPhwUbkk7h9sKW5zSvjsYNugvxJ-TrVaEgt_DCUT0bmKhQScRrjMB6P9O50uznPw"
    "T66oF1NnU_G0HVhRzS5voiXE-y7tT3z0M3-8A6YK009Bk_digVUul-HA4Fpd5IjoBBGe3yzaQ2ZvzarvRuipvNEQ"
    "CI0onpfuZZJQ0d8"
)

APPENDIX_D_STATEMENT = {
    "version": "1.0.0",
    "id": "33cff416-e331-4c9d-969e-5373a1756120",
    "actor": {
        "mbox": "mailto:example@example.com",
        "name": "Example Learner",
        "objectType": "Agent",
    },
    "verb": {
        "id": "http://adlnet.gov/expapi/verbs/experienced",
        "display": {"en-US": "experienced"},
    },
    "object": {
        "id": "https://www.youtube.com/watch?v=xh4kIiH3Sm8",
        "objectType": "Activity",
        "definition": {
            "name": {"en-US": "Tax Tips & Information : How to File a Tax Return "},
            "description": {
                "en-US": "Filing a tax return will require filling out either a 1040, "
                "1040A or 1040EZ form"
            },
        },
    },
    "timestamp": "2013-04-01T12:00:00Z",
    "attachments": [
        {
            "usageType": "http://adlnet.gov/expapi/attachments/signature",
            "display": {"en-US": "Signature"},
            "description": {"en-US": "A test signature"},
            "contentType": "application/octet-stream",
            "length": 4235,
            "sha2": "672fa5fa658017f1b72d65036f13379c6ab05d4ab3b6664908d8acf0b6a0c634",
        }
    ],
}


def test_specification_appendix_d_example_verifies() -> None:
    token = APPENDIX_D_JWS.encode()
    assert hashlib.sha256(token).hexdigest() == APPENDIX_D_STATEMENT["attachments"][0]["sha2"]
    verify_signed_statement(APPENDIX_D_STATEMENT, token)
    # Sent the way a provider would: statement part, then the signature part.
    body, content_type = build_multipart(
        orjson.dumps(APPENDIX_D_STATEMENT),
        [(hashlib.sha256(token).hexdigest(), "application/octet-stream", token)],
    )
    statement, parts = parse_multipart(body, content_type)
    verify_statement_signatures(statement, check_attachments(statement, parts))


def test_specification_appendix_d_tampered_statement_is_rejected() -> None:
    tampered = copy.deepcopy(APPENDIX_D_STATEMENT)
    tampered["actor"]["mbox"] = "mailto:someone.else@example.com"
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(tampered, APPENDIX_D_JWS.encode())
    assert_400(excinfo, "does not match", "statement.actor.mbox")


# ------------------------------------------------------------------------- rejections


def test_statement_changed_after_signing_is_rejected(key, cert) -> None:
    original = base_statement()
    token = sign_statement(original, private_pem(key), cert_pem(cert))
    received = signed(original, token)
    received["result"]["score"]["scaled"] = 0.99
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(received, token)
    assert_400(excinfo, "does not match", "statement.result.score.scaled")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s.update(id="11111111-1111-4111-8111-111111111111"), ["statement.id"]),
        (lambda s: s.update(timestamp="2024-05-01T12:00:01Z"), ["statement.timestamp"]),
        (lambda s: s.update(version="1.0.3"), ["statement.version"]),
        (lambda s: s.pop("result"), ["statement.result", "missing from the statement"]),
        (lambda s: s.update(context={"platform": "x"}), ["statement.context", "not in the"]),
        (lambda s: s["verb"]["display"].update({"en-US": "failed"}), ["verb.display"]),
    ],
)
def test_differences_the_lrs_cannot_cause_are_rejected(key, change, words) -> None:
    original = base_statement()
    original["version"] = "1.0.0"
    token = sign_statement(original, private_pem(key))
    received = signed(original, token)
    change(received)
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(received, token)
    assert_400(excinfo, "does not match", *words)


def test_other_attachments_must_match_the_payload(key) -> None:
    original = base_statement()
    token = sign_statement(original, private_pem(key))
    received = signed(original, token)
    received["attachments"].insert(
        0,
        {
            "usageType": "http://example.com/usage/essay",
            "display": {"en-US": "Essay"},
            "contentType": "text/plain",
            "length": 1,
            "sha2": hashlib.sha256(b"x").hexdigest(),
        },
    )
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(received, token)
    assert_400(excinfo, "statement.attachments")


def test_tampered_payload_fails_the_x5c_check(key, cert) -> None:
    original = base_statement()
    token = sign_statement(original, private_pem(key), cert_pem(cert))
    header, _, signature = token.split(b".")
    forged = copy.deepcopy(original)
    forged["result"]["score"]["scaled"] = 1.0
    forged_token = b".".join([header, b64url(orjson.dumps(forged)).encode(), signature])
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(signed(forged, forged_token), forged_token)
    assert_400(excinfo, "does not verify", "x5c")


def test_certificate_of_another_key_in_x5c_is_rejected(key, other_key) -> None:
    statement = base_statement()
    token = sign_statement(statement, private_pem(key))
    header_json = {
        "alg": "RS256",
        "x5c": [
            base64.b64encode(
                self_signed_cert(other_key).public_bytes(serialization.Encoding.DER)
            ).decode()
        ],
    }
    # Re-sign with the right key but advertise the other key's certificate.
    forged = jws.JWS(orjson.dumps(statement))
    forged.add_signature(
        jwk.JWK.from_pyca(key), alg="RS256", protected=orjson.dumps(header_json).decode()
    )
    forged_token = forged.serialize(compact=True).encode()
    assert forged_token != token
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(signed(statement, forged_token), forged_token)
    assert_400(excinfo, "does not verify")


@pytest.mark.parametrize("alg", ["HS256", "ES256", "PS256"])
def test_algorithms_other_than_rsa_sha_are_rejected(alg: str) -> None:
    # Part Two §2.6.s4.b4: RS256, RS384 or RS512 only.
    statement = base_statement()
    if alg == "HS256":
        key = jwk.JWK.generate(kty="oct", size=256)
    elif alg == "ES256":
        key = jwk.JWK.from_pyca(ec.generate_private_key(ec.SECP256R1()))
    else:
        key = jwk.JWK.generate(kty="RSA", size=2048)
    token = jws.JWS(orjson.dumps(statement))
    token.allowed_algs = [alg]
    token.add_signature(key, alg=alg, protected=orjson.dumps({"alg": alg}).decode())
    jws_bytes = token.serialize(compact=True).encode()
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(signed(statement, jws_bytes), jws_bytes)
    assert_400(excinfo, repr(alg), "RS256")


def test_unsigned_alg_none_is_rejected() -> None:
    statement = base_statement()
    header = b64url(orjson.dumps({"alg": "none"}))
    jws_bytes = f"{header}.{b64url(orjson.dumps(statement))}.AAAA".encode()
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(statement, jws_bytes)
    assert_400(excinfo, "'none'", "RS256")


@pytest.mark.parametrize(
    ("garbage", "words"),
    [
        (b"", ["empty"]),
        (b"   ", ["empty"]),
        (b"not a jws at all", ["compact serialization"]),
        (b"\xff\xfe\x00binary", ["not ascii"]),
        (b"a.b", ["compact serialization"]),
        (b"a.b.c.d", ["compact serialization"]),
        (b"abc.def.g!h", ["compact serialization"]),
        (b"e30.e30.", ["compact serialization"]),
        (b"x.e30.AAAA", ["compact serialization"]),
        (b"e30.e30.AAAA", ["no 'alg'"]),
        (b'{"payload": "e30"}', ["not a valid jws"]),
        (b"{not json", ["not a valid jws"]),
        (b'{"payload":"e30","protected":"eyJhbGciOiJSUzI1NiJ9","signature":""}', ["empty"]),
    ],
)
def test_garbage_jws_is_rejected(garbage: bytes, words: list[str]) -> None:
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(base_statement(), garbage)
    assert_400(excinfo, *words)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"{'single': 'quotes'}", ["not a valid json"]),
        (b'["an", "array"]', ["not a json object"]),
        (b"null", ["not a json object"]),
    ],
)
def test_payload_must_be_a_json_statement(key, payload: bytes, words: list[str]) -> None:
    # The conformance suite's "bad JSON serialization" case (Part Two §2.6.s4.b3).
    token = jws.JWS(payload)
    token.add_signature(
        jwk.JWK.from_pyca(key), alg="RS256", protected=orjson.dumps({"alg": "RS256"}).decode()
    )
    jws_bytes = token.serialize(compact=True).encode()
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(base_statement(), jws_bytes)
    assert_400(excinfo, *words)


@pytest.mark.parametrize(
    ("x5c", "words"),
    [
        ("MIIB", ["x5c"]),
        ([], ["x5c"]),
        (["%%%not base64%%%"], ["x5c[0]"]),
        ([base64.b64encode(b"not DER at all").decode()], ["x5c[0]"]),
    ],
)
def test_malformed_x5c_is_rejected(key, x5c, words: list[str]) -> None:
    statement = base_statement()
    token = jws.JWS(orjson.dumps(statement))
    token.add_signature(
        jwk.JWK.from_pyca(key),
        alg="RS256",
        protected=orjson.dumps({"alg": "RS256", "x5c": x5c}).decode(),
    )
    jws_bytes = token.serialize(compact=True).encode()
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(signed(statement, jws_bytes), jws_bytes)
    assert_400(excinfo, *words)


def test_json_serialization_is_accepted_and_checked(key, cert) -> None:
    # Strongly discouraged (Part Two §2.6.s4.b2) but not forbidden.
    statement = base_statement()
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    token = jws.JWS(orjson.dumps(statement))
    token.add_signature(
        jwk.JWK.from_pyca(key),
        alg="RS256",
        protected=orjson.dumps({"alg": "RS256"}).decode(),
        header=orjson.dumps({"x5c": x5c}).decode(),
    )
    jws_bytes = token.serialize().encode()
    verify_signed_statement(signed(statement, jws_bytes), jws_bytes)
    broken = orjson.loads(jws_bytes)
    broken["signature"] = b64url(b"\x00" * 256)
    broken_bytes = orjson.dumps(broken)
    with pytest.raises(XAPIError) as excinfo:
        verify_signed_statement(signed(statement, broken_bytes), broken_bytes)
    assert_400(excinfo, "does not verify")


# -------------------------------------------------------------- verify_statement_signatures


def test_signature_attachment_must_be_octet_stream(key) -> None:
    # The conformance suite's "bad contentType" case (Part Two §2.6.s4.b1).
    statement = base_statement()
    token = sign_statement(statement, private_pem(key))
    received = signed(statement, token)
    received["attachments"][0]["contentType"] = "text/plain; charset=ascii"
    with pytest.raises(XAPIError) as excinfo:
        verify_statement_signatures([received], {received["attachments"][0]["sha2"]: token})
    assert_400(excinfo, "statement[0].attachments[0].contentType", "application/octet-stream")


def test_signature_data_must_be_present_unless_file_url(key) -> None:
    statement = base_statement()
    token = sign_statement(statement, private_pem(key))
    received = signed(statement, token)
    with pytest.raises(XAPIError) as excinfo:
        verify_statement_signatures([received], {})
    assert_400(excinfo, "statement[0].attachments[0]", "missing")
    received["attachments"][0]["fileUrl"] = "http://example.com/signature.jws"
    verify_statement_signatures([received], {})


def test_errors_name_the_statement_and_attachment(key) -> None:
    first = base_statement()
    second = base_statement()
    token = sign_statement(second, private_pem(key))
    received = signed(second, token)
    received["verb"]["id"] = "http://adlnet.gov/expapi/verbs/failed"
    parts = {hashlib.sha256(token).hexdigest(): token}
    with pytest.raises(XAPIError) as excinfo:
        verify_statement_signatures([first, received], parts)
    assert_400(excinfo, "statement[1].attachments[0]:", "statement.verb.id")


# -------------------------------------------------------------------------- signing


def test_sign_statement_payload_excludes_signature_attachments(key) -> None:
    statement = signed(base_statement(), b"an older signature")
    token = sign_statement(statement, private_pem(key))
    payload = orjson.loads(base64.urlsafe_b64decode(token.split(b".")[1] + b"=="))
    assert "attachments" not in payload
    assert payload == base_statement()
    attachment = signature_attachment(token)
    assert attachment["usageType"] == SIGNATURE_USAGE_TYPE
    assert attachment["contentType"] == "application/octet-stream"
    assert attachment["length"] == len(token)
    assert attachment["sha2"] == hashlib.sha256(token).hexdigest()


def test_sign_statement_refuses_bad_inputs(key, other_key) -> None:
    with pytest.raises(ValueError):
        sign_statement(base_statement(), private_pem(key), alg="HS256")
    with pytest.raises(ValueError):
        sign_statement(base_statement(), private_pem(key), cert_pem(self_signed_cert(other_key)))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError):
        sign_statement(base_statement(), private_pem(ec_key))


def test_sign_statement_puts_a_whole_chain_in_x5c(key, cert, other_key) -> None:
    chain = cert_pem(cert) + cert_pem(self_signed_cert(other_key))
    token = sign_statement(base_statement(), private_pem(key), chain)
    header = orjson.loads(base64.urlsafe_b64decode(token.split(b".")[0] + b"=="))
    assert len(header["x5c"]) == 2
    verify_signed_statement(base_statement(), token)
