"""One-time invitations for dynamic registration.

/lti/register is public, and the tool links LTI users to learners by email: a platform that
registered itself could launch as anyone's email. So a registration needs an invitation
that the operator creates (`masteryhub platforms invite`) and hands to the LMS admin as a
URL. Only the SHA-256 of the token is stored (it is a 256-bit random value, not a password);
it expires, and a successful registration uses it up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import mongoengine as me

from mappings.models import utcnow

DEFAULT_EXPIRY = dt.timedelta(days=7)


class RegistrationInvite(me.Document):
    token_sha256 = me.StringField(primary_key=True)
    note = me.StringField()  # who it is for, shown in listings
    created_at = me.DateTimeField(default=utcnow)
    expires_at = me.DateTimeField(required=True)
    claimed_at = me.DateTimeField()  # a registration with it is running or has succeeded
    used_at = me.DateTimeField()  # the registration succeeded
    platform = me.StringField()  # the Platform it registered

    meta = {"collection": "lti_registration_invites"}

    def state(self, now: dt.datetime | None = None) -> str:
        if self.used_at or self.claimed_at:
            return "used"
        if _aware(self.expires_at) <= (now or utcnow()):
            return "expired"
        return "valid"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_invite(expires: dt.timedelta = DEFAULT_EXPIRY,
                  note: str | None = None) -> tuple[RegistrationInvite, str]:
    """A new invitation and its token (shown once; only its hash is kept)."""
    token = secrets.token_urlsafe(32)
    invite = RegistrationInvite(token_sha256=_digest(token), note=note,
                                expires_at=utcnow() + expires)
    invite.save(force_insert=True)
    return invite, token


def invite_state(token: str | None) -> str:
    """'valid', 'used', 'expired' or 'unknown'."""
    if not token:
        return "unknown"
    invite = RegistrationInvite.objects(token_sha256=_digest(token)).first()
    return invite.state() if invite else "unknown"


def claim(token: str) -> bool:
    """Take the invitation for one registration attempt (atomic: two registrations racing
    with the same invitation cannot both proceed)."""
    now = utcnow()
    return bool(RegistrationInvite.objects(token_sha256=_digest(token), claimed_at=None,
                                           used_at=None, expires_at__gt=now)
                .update_one(set__claimed_at=now))


def release(token: str) -> None:
    """The registration failed: the invitation can be used again (until it expires)."""
    RegistrationInvite.objects(token_sha256=_digest(token), used_at=None) \
        .update_one(unset__claimed_at=True)


def use(token: str, platform: str) -> None:
    RegistrationInvite.objects(token_sha256=_digest(token)) \
        .update_one(set__used_at=utcnow(), set__platform=platform)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
