"""Operator accounts for the admin area (/admin): passwords, sessions, login throttling,
the audit trail, and the ``masteryhub admins`` commands.

Why separate accounts and not LTI roles: the admin area manages every school's LMS
registration, provider credential and rule. An LMS administrator is an administrator of
*one* school's LMS; a launch from it must never reach these pages. So /admin has its own
accounts, created only from the command line by whoever runs the server.

- Passwords: werkzeug's salted scrypt hashes (a human chose them, so a slow KDF).
- Sessions: server-side records found by the SHA-256 of a random id kept in the signed
  Flask session cookie, with an absolute lifetime. Logout or removing the account ends
  them at once (a signed cookie alone could not be revoked).
- CSRF: every session carries a random token that each POST must echo.
- Throttling: failed logins are recorded per (account, address); after
  ``MAX_FAILURES`` in ``FAILURE_WINDOW`` that pair is refused until the window passes,
  and one address is refused after ``MAX_FAILURES_PER_IP`` failures on any account.
- Audit: every action (who, what, when, from where) goes to ``admin_audit``.

Framework-free except for the click commands at the end.
"""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

import click
import mongoengine as me
from werkzeug.security import check_password_hash, generate_password_hash

from mappings.models import utcnow

SESSION_LIFETIME = dt.timedelta(hours=8)
FAILURE_WINDOW = dt.timedelta(minutes=15)
MAX_FAILURES = 5  # per account and address, per window
MAX_FAILURES_PER_IP = 20  # per address over all accounts, per window (password spraying)
MIN_PASSWORD_LENGTH = 12
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class AdminAccount(me.Document):
    email = me.StringField(primary_key=True)  # lower-cased
    password_hash = me.StringField(required=True)
    created_at = me.DateTimeField(default=utcnow)
    last_login_at = me.DateTimeField()

    meta = {"collection": "admin_accounts"}


class AdminSession(me.Document):
    """A signed-in admin. Only the hash of the session id is stored."""

    id_sha256 = me.StringField(primary_key=True)
    email = me.StringField(required=True)
    csrf_token = me.StringField(required=True)
    ip = me.StringField()
    created_at = me.DateTimeField(default=utcnow)
    expires_at = me.DateTimeField(required=True)

    meta = {"collection": "admin_sessions", "indexes": ["email", "expires_at"]}


class LoginFailure(me.Document):
    email = me.StringField(required=True)
    ip = me.StringField(required=True)
    at = me.DateTimeField(required=True)

    meta = {"collection": "admin_login_failures",
            "indexes": [("email", "ip", "at"), ("ip", "at")]}


class AuditEntry(me.Document):
    at = me.DateTimeField(default=utcnow)
    admin = me.StringField(required=True)  # email, or "cli" for commands
    action = me.StringField(required=True)  # e.g. "credential.create"
    target = me.StringField()
    detail = me.StringField()
    ip = me.StringField()

    meta = {"collection": "admin_audit", "indexes": ["-at"]}


class AdminError(ValueError):
    """A bad email or password; the message says what to fix."""


class LoginThrottled(Exception):
    def __init__(self, retry_after: dt.timedelta):
        self.retry_after = retry_after
        minutes = max(1, -(-int(retry_after.total_seconds()) // 60))
        super().__init__(f"Too many failed sign-ins for this account from your address. "
                         f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.")


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalize_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not _EMAIL.match(email) or len(email) > 254:
        raise AdminError(f"{email!r} is not an email address")
    return email


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AdminError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def audit(admin: str, action: str, target: str | None = None, detail: str | None = None,
          ip: str | None = None) -> None:
    AuditEntry(admin=admin, action=action, target=target, detail=detail, ip=ip).save()


def recent_audit(limit: int = 50) -> list[AuditEntry]:
    return list(AuditEntry.objects.order_by("-at").limit(limit))


# -- accounts -------------------------------------------------------------------------------
def any_admin() -> bool:
    return AdminAccount.objects.only("email").first() is not None


def add_admin(email: str, password: str) -> AdminAccount:
    email = normalize_email(email)
    check_password_strength(password)
    if AdminAccount.objects(email=email).first() is not None:
        raise AdminError(f"{email} already has an account (`masteryhub admins password "
                         f"{email}` sets a new password)")
    account = AdminAccount(email=email, password_hash=generate_password_hash(password))
    account.save(force_insert=True)
    return account


def set_password(email: str, password: str) -> AdminAccount:
    email = normalize_email(email)
    check_password_strength(password)
    account = AdminAccount.objects(email=email).first()
    if account is None:
        raise AdminError(f"no admin account {email}")
    account.update(set__password_hash=generate_password_hash(password))
    end_sessions(email)  # a new password signs everyone out of that account
    return account


def remove_admin(email: str) -> None:
    email = normalize_email(email)
    if not AdminAccount.objects(email=email).delete():
        raise AdminError(f"no admin account {email}")
    end_sessions(email)


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_hex(16))


def _failures_since(now: dt.datetime, **query) -> list[LoginFailure]:
    return list(LoginFailure.objects(at__gt=now - FAILURE_WINDOW, **query).order_by("at")
                .limit(MAX_FAILURES_PER_IP))


def authenticate(email: str, password: str, ip: str,
                 now: dt.datetime | None = None) -> AdminAccount | None:
    """The account for a correct email and password; None otherwise. Raises
    :class:`LoginThrottled` (before checking the password) while the account and address
    are locked out."""
    now = now or utcnow()
    email = (email or "").strip().lower()[:254]
    for query, limit in (({"email": email, "ip": ip}, MAX_FAILURES),
                         ({"ip": ip}, MAX_FAILURES_PER_IP)):
        failures = _failures_since(now, **query)
        if len(failures) >= limit:
            raise LoginThrottled(_aware(failures[-limit].at) + FAILURE_WINDOW - now)
    account = AdminAccount.objects(email=email).first() if email else None
    # Hash even for unknown emails, so timing does not tell which accounts exist.
    valid = check_password_hash(account.password_hash if account else _dummy_hash(),
                                password or "")
    if account is None or not valid:
        LoginFailure(email=email, ip=ip, at=now).save()
        LoginFailure.objects(at__lt=now - FAILURE_WINDOW).delete()
        return None
    LoginFailure.objects(email=email, ip=ip).delete()
    account.update(set__last_login_at=now)
    return account


# -- sessions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignedIn:
    email: str
    csrf_token: str
    expires_at: dt.datetime


def start_session(email: str, ip: str | None = None) -> str:
    """A new session; returns its id (for the cookie; only its hash is stored)."""
    sid = secrets.token_urlsafe(32)
    now = utcnow()
    AdminSession(id_sha256=_sha256(sid), email=email, csrf_token=secrets.token_urlsafe(32),
                 ip=ip, created_at=now, expires_at=now + SESSION_LIFETIME).save(force_insert=True)
    AdminSession.objects(expires_at__lt=now).delete()
    return sid


def load_session(sid: str | None) -> SignedIn | None:
    if not sid or not isinstance(sid, str):
        return None
    found = AdminSession.objects(id_sha256=_sha256(sid)).first()
    if found is None:
        return None
    if _aware(found.expires_at) <= utcnow():
        found.delete()
        return None
    return SignedIn(found.email, found.csrf_token, _aware(found.expires_at))


def end_session(sid: str | None) -> None:
    if sid and isinstance(sid, str):
        AdminSession.objects(id_sha256=_sha256(sid)).delete()


def end_sessions(email: str) -> None:
    AdminSession.objects(email=email).delete()


def tokens_equal(expected: str | None, given: str | None) -> bool:
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(
        expected.encode(), given.encode())


# -- `masteryhub admins` ----------------------------------------------------------------------
def _db(ctx: click.Context):
    return ctx.find_root().obj["database"]()


def _cli_user() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def _password(generate: bool) -> tuple[str, bool]:
    if generate:
        return generate_password(), True
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_password_strength(password)
    except AdminError as exc:
        raise click.BadParameter(str(exc), param_hint="password") from None
    return password, False


@click.group("admins")
def admins() -> None:
    """Operator accounts for the admin pages (BASE_URL/admin).

    \b
    These are not LMS users: an admin here manages every school's registrations,
    credentials, frameworks and rules. Create one with `masteryhub admins add EMAIL`.
    """


@admins.command("add")
@click.argument("email")
@click.option("--generate-password", "generate", is_flag=True,
              help="Generate a password and print it once (instead of prompting).")
@click.pass_context
def admins_add(ctx: click.Context, email: str, generate: bool) -> None:
    """Create an admin account; prompts for its password (at least 12 characters)."""
    try:
        email = normalize_email(email)
    except AdminError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    with _db(ctx):
        if AdminAccount.objects(email=email).first() is not None:
            raise click.ClickException(f"{email} already has an account (`masteryhub admins "
                                       f"password {email}` sets a new password)")
        password, generated = _password(generate)
        try:
            add_admin(email, password)
        except AdminError as exc:
            raise click.ClickException(str(exc)) from None
        audit(_cli_user(), "admin.add", email)
    click.echo(f"Admin account {email} created. Sign in at BASE_URL/admin/login.")
    if generated:
        click.echo(f"Password (shown once): {password}")


@admins.command("password")
@click.argument("email")
@click.option("--generate-password", "generate", is_flag=True,
              help="Generate a password and print it once (instead of prompting).")
@click.pass_context
def admins_password(ctx: click.Context, email: str, generate: bool) -> None:
    """Set a new password for an admin account (signs that account out everywhere)."""
    with _db(ctx):
        if AdminAccount.objects(email=email.strip().lower()).first() is None:
            raise click.ClickException(f"no admin account {email.strip().lower()}")
        password, generated = _password(generate)
        try:
            account = set_password(email, password)
        except AdminError as exc:
            raise click.ClickException(str(exc)) from None
        audit(_cli_user(), "admin.password", account.email)
    click.echo(f"New password set for {account.email}.")
    if generated:
        click.echo(f"Password (shown once): {password}")


@admins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def admins_list(ctx: click.Context, as_json: bool) -> None:
    """List admin accounts."""
    with _db(ctx):
        rows = [{"email": a.email, "created_at": a.created_at.isoformat(),
                 "last_login_at": a.last_login_at.isoformat() if a.last_login_at else None}
                for a in AdminAccount.objects.order_by("email")]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("No admin accounts. Create one with `masteryhub admins add EMAIL`.")
    for row in rows:
        click.echo(f"{row['email']}  created {row['created_at'][:16]}  "
                   f"last sign-in {(row['last_login_at'] or 'never')[:16]}")


@admins.command("remove")
@click.argument("email")
@click.pass_context
def admins_remove(ctx: click.Context, email: str) -> None:
    """Delete an admin account and end its sessions."""
    with _db(ctx):
        try:
            remove_admin(email)
        except AdminError as exc:
            raise click.ClickException(str(exc)) from None
        audit(_cli_user(), "admin.remove", email.strip().lower())
    click.echo(f"Admin account {email.strip().lower()} removed.")


COMMANDS = (admins,)
