"""The tool's signing keys: generated on first use, published at /lti/jwks, rotatable.

Platforms fetch and cache our key set, so a rotation never removes the previous key at
once: it stays published (but no longer signs) for ``keep`` after the rotation.
"""

from __future__ import annotations

import datetime as dt

from jwcrypto import jwk

from lti_tool.models import ToolKey
from mappings.models import utcnow

DEFAULT_KEEP = dt.timedelta(days=7)


def _new_key() -> ToolKey:
    key = jwk.JWK.generate(kty="RSA", size=2048)
    kid = key.thumbprint()
    public = key.export_public(as_dict=True) | {"kid": kid, "alg": "RS256", "use": "sig"}
    return ToolKey(kid=kid, private_pem=key.export_to_pem(private_key=True,
                                                        password=None).decode(),
                   public_jwk=public, active=True)


def active_key() -> ToolKey:
    """The key that signs now; the first call creates it."""
    key = ToolKey.objects(active=True).order_by("-created_at").first()
    if key is None:
        key = _new_key()
        key.save(force_insert=True)
    return key


def published(now: dt.datetime | None = None) -> list[dict]:
    """The public keys for /lti/jwks: the active one and those still in their grace time."""
    now = now or utcnow()
    active_key()
    keys = []
    for key in ToolKey.objects.order_by("-created_at"):
        if key.active or (key.retire_after and _aware(key.retire_after) > now):
            keys.append(dict(key.public_jwk))
    return keys


def rotate(keep: dt.timedelta = DEFAULT_KEEP) -> tuple[ToolKey, list[ToolKey]]:
    """Make a new active key; the previous ones keep being published for ``keep``.
    Returns the new key and the superseded ones."""
    old = list(ToolKey.objects(active=True))
    new = _new_key()
    new.save(force_insert=True)
    until = utcnow() + keep
    for key in old:
        key.update(set__active=False, set__retire_after=until)
    return new, old


def prune(now: dt.datetime | None = None) -> int:
    """Delete keys past their grace time; returns how many."""
    now = now or utcnow()
    return ToolKey.objects(active=False, retire_after__lte=now).delete()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
