"""Calling a platform's LTI Advantage services (AGS, NRPS) as the tool.

pylti1p3's ``ServiceConnector`` does the OAuth2 client-credentials grant with our signed
client assertion (https://www.imsglobal.org/spec/security/v1p0/#using-json-web-tokens-
with-oauth-2-0-client-credentials-grant). Around it, what it leaves to us:

- access tokens are cached in MongoDB (``lti_access_tokens``) per (registration, scopes)
  until shortly before they expire, so every process shares one token instead of asking
  the platform on each call. pylti1p3's own cache key is issuer + scopes, which mixes up
  two Canvas schools (one issuer, one client id each): ours includes the registration;
- every HTTP call has a timeout (pylti1p3 passes none: a silent platform would hang the
  sync loop or a request forever);
- a body that is not JSON (lti1p3platform 0.1.8 answers a score POST with text) is kept
  as text instead of failing a call that succeeded.

Nothing here runs in a web request except the instructor's explicit roster refresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import typing as t

import requests
from pylti1p3.exception import LtiServiceException
from pylti1p3.service_connector import REQUESTS_USER_AGENT, ServiceConnector

from lti_tool.models import Platform
from lti_tool.registry import registration_of
from mappings.models import utcnow

TOKENS = "lti_access_tokens"
# Stop using a cached token this long before the platform says it expires (clock skew,
# and a long pass that started with a token about to lapse).
TOKEN_MARGIN = dt.timedelta(seconds=120)
TIMEOUT = 15.0  # seconds, per HTTP call


class ServiceError(RuntimeError):
    """A service call that failed; the message is what the instructor and admins see."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        """A refusal about this one request (bad data, unknown user): retrying the whole
        course would not help. Authentication, throttling and server errors are not."""
        return self.status is not None and 400 <= self.status < 500 and \
            self.status not in (401, 403, 408, 429)


class _TimeoutSession(requests.Session):
    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout
        self.headers["User-Agent"] = REQUESTS_USER_AGENT + " (Mastery Hub)"

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


def _describe(exc: Exception) -> ServiceError:
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, LtiServiceException):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        body = re.sub(r"\s+", " ", getattr(response, "text", "") or "").strip()[:200]
        text = re.sub(r"\s+", " ", str(exc))  # names the URL and the HTTP status
        return ServiceError(text + (f" ({body})" if body else ""), status=status)
    if isinstance(exc, requests.Timeout):
        return ServiceError(f"the platform did not answer in time ({exc})")
    if isinstance(exc, requests.RequestException):
        return ServiceError(f"the platform could not be reached ({exc})")
    return ServiceError(f"{type(exc).__name__}: {exc}")


class Connector(ServiceConnector):
    """pylti1p3's connector for one platform registration, with a shared token cache."""

    def __init__(self, platform: Platform, *, timeout: float = TIMEOUT, db=None):
        super().__init__(registration_of(platform), requests_session=_TimeoutSession(timeout))
        self.platform = platform
        self._db = db

    @property
    def _tokens(self):
        if self._db is None:
            from mongoengine.connection import get_db

            self._db = get_db()
        return self._db[TOKENS]

    # -- token cache -------------------------------------------------------------------
    def _scope_key(self, scopes: t.Iterable[str]) -> str:
        text = "|".join([self.platform.identifier, self.platform.issuer,
                         self.platform.client_id, *sorted(scopes)])
        return hashlib.sha256(text.encode()).hexdigest()

    def _get_cached_access_token(self, scope_key: str) -> str | None:
        doc = self._tokens.find_one({"_id": scope_key, "expires_at": {"$gt": utcnow()}})
        return doc["token"] if doc else None

    def _cache_access_token(self, scope_key: str, access_token: str, expires_in: float):
        try:
            lifetime = float(expires_in or 0)
        except (TypeError, ValueError):
            lifetime = 0.0
        usable = dt.timedelta(seconds=lifetime) - TOKEN_MARGIN
        if lifetime <= 0 or usable <= dt.timedelta(0):
            return  # no (useful) lifetime given: ask again next time
        self._tokens.update_one(
            {"_id": scope_key},
            {"$set": {"token": access_token, "platform": self.platform.identifier,
                      "expires_at": utcnow() + usable, "fetched_at": utcnow()}},
            upsert=True)

    def forget_token(self, scopes: t.Sequence[str]) -> None:
        """Drop a cached token the platform refused (revoked, or its keys rotated)."""
        self._tokens.delete_one({"_id": self._scope_key(sorted(scopes))})

    # -- tolerant requests -------------------------------------------------------------
    def make_service_request(self, scopes, url, *, is_post=False, data=None,
                             content_type="application/json", accept="application/json",
                             case_insensitive_headers=False):
        """pylti1p3's request, but a success with a non-JSON body is kept as text, and a
        401 drops the cached token and tries once more with a fresh one."""
        for attempt in (1, 2):
            token = self.get_access_token(scopes)
            headers = {"Authorization": "Bearer " + token, "Accept": accept}
            if is_post:
                headers["Content-Type"] = content_type
                r = self._requests_session.post(url, data=data or None, headers=headers)
            else:
                r = self._requests_session.get(url, headers=headers)
            if r.status_code == 401 and attempt == 1:
                self.forget_token(scopes)
                continue
            break
        if not r.ok:
            raise LtiServiceException("There was an error making a service request.", r)
        next_page = None
        match = re.search(r'<([^>]*)>;\s*rel="next"',
                          r.headers.get("link", "").replace("\n", " "), re.IGNORECASE)
        if match:
            next_page = match.group(1)
        body: t.Any = None
        if r.content:
            try:
                body = r.json()
            except ValueError:
                body = r.text
        return {"headers": r.headers if case_insensitive_headers else dict(r.headers),
                "body": body, "next_page_url": next_page}

    def call(self, fn: t.Callable[[], t.Any]) -> t.Any:
        """Run a service call, turning every failure into a ServiceError with a message
        a person can act on."""
        try:
            return fn()
        except Exception as exc:  # requests, pylti1p3 and platform oddities alike
            raise _describe(exc) from exc


def connector_for(platform_id: str, *, timeout: float = TIMEOUT, db=None) -> Connector:
    platform = Platform.objects(identifier=platform_id).first()
    if platform is None:
        raise ServiceError(f"the platform registration {platform_id!r} no longer exists")
    if platform.status != "active":
        raise ServiceError(f"the platform registration {platform_id!r} is disabled")
    return Connector(platform, timeout=timeout, db=db)


def ensure_indexes(db) -> None:
    db[TOKENS].create_index("expires_at", expireAfterSeconds=3600)
