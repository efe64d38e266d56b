"""Provider credentials: HTTP Basic key/secret pairs with xAPI OAuth-style scopes.

Why a fast hash: secrets are 240-bit random tokens we generate, not passwords a human
chose, so a dictionary attack is hopeless and a slow KDF would only tax every request.
The secret is shown once at creation and only its SHA-256 is stored.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import secrets
import time

import mongoengine as me

from lrs.errors import XAPIError

# xAPI 1.0.3 Part Three §4.1 "OAuth Authorization Scope"
SCOPES = (
    "statements/write",
    "statements/read/mine",
    "statements/read",
    "state",
    "define",
    "profile",
    "all/read",
    "all",
)
DEFAULT_SCOPES = ("statements/write", "statements/read/mine")
REALM = "Mastery Hub xAPI"


class Credential(me.Document):
    """One provider's access to the LRS; becomes the `authority` of what it writes."""

    key = me.StringField(required=True, unique=True)
    secret_sha256 = me.StringField(required=True)
    name = me.StringField(required=True)
    scopes = me.ListField(me.StringField(choices=SCOPES), required=True)
    created_at = me.DateTimeField(required=True)
    revoked_at = me.DateTimeField()

    meta = {"collection": "lrs_credentials", "indexes": []}

    def has(self, *wanted: str) -> bool:
        """True when any of the wanted scopes (or one that implies it) was granted."""
        granted = set(self.scopes)
        if "all" in granted:
            return True
        return any(w in granted for w in wanted)

    def can_read_statements(self) -> bool:
        return self.has("statements/read", "all/read")

    def can_read_own_statements(self) -> bool:
        return self.can_read_statements() or self.has("statements/read/mine")

    def can_write_statements(self) -> bool:
        return self.has("statements/write")

    def can_use_state(self, write: bool) -> bool:
        return self.has("state") or (not write and self.has("all/read"))

    def can_use_profiles(self, write: bool) -> bool:
        return self.has("profile") or (not write and self.has("all/read"))

    def can_read_definitions(self) -> bool:
        return self.has("all/read", "statements/read", "define", "profile", "state")

    def authority(self, base_url: str) -> dict:
        """The Agent the LRS puts in `authority` (Part Two §2.4.9): who vouches for it."""
        return {"objectType": "Agent", "name": self.name,
                "account": {"homePage": base_url, "name": self.key}}


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Accept ``a,b`` or a list; reject unknown scopes with the list of valid ones."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = [s.strip() for s in items if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scope(s) {', '.join(unknown) or '(none given)'}; "
                         f"valid scopes: {', '.join(SCOPES)}")
    return list(dict.fromkeys(scopes))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_credential(name: str, scopes: list[str]) -> tuple[Credential, str]:
    """Create a credential; the secret is returned once and never stored."""
    name = name.strip()
    if not name:
        raise ValueError("a credential needs a name (the provider it belongs to)")
    secret = secrets.token_urlsafe(30)
    credential = Credential(key=secrets.token_hex(10), secret_sha256=_digest(secret), name=name,
                            scopes=parse_scopes(scopes),
                            created_at=dt.datetime.now(dt.UTC)).save()
    return credential, secret


def revoke_credential(key: str) -> Credential:
    credential = Credential.objects(key=key).first()
    if credential is None:
        raise KeyError(f"no credential with key {key!r}")
    if credential.revoked_at is None:
        credential.revoked_at = dt.datetime.now(dt.UTC)
        credential.save()
    _cache.pop(key, None)
    return credential


# Why a short cache: every request authenticates, and a credential lookup is a database
# round trip. A revocation made in another process takes effect within this many seconds.
CACHE_SECONDS = 2.0
_cache: dict[str, tuple[float, Credential]] = {}


def authenticate(authorization: str | None) -> Credential:
    """Resolve an ``Authorization: Basic`` header; 401 for anything else (Part Three §4)."""
    if not authorization:
        raise XAPIError("authentication required: use HTTP Basic with your LRS key and secret",
                        401)
    scheme, _, payload = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise XAPIError("unsupported authorization scheme: use HTTP Basic", 401)
    try:
        key, sep, secret = base64.b64decode(payload.strip(), validate=True).decode().partition(
            ":")
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text, bad UTF-8
        raise XAPIError("malformed Basic credentials", 401) from None
    if not sep:
        raise XAPIError("malformed Basic credentials", 401)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and cached[0] > now:
        credential = cached[1]
    else:
        credential = Credential.objects(key=key).first()
        if credential is not None:
            _cache[key] = (now + CACHE_SECONDS, credential)
    if credential is None or not hmac.compare_digest(credential.secret_sha256, _digest(secret)):
        raise XAPIError("unknown key or wrong secret", 401)
    if credential.revoked_at is not None:
        raise XAPIError("this credential was revoked", 401)
    return credential
