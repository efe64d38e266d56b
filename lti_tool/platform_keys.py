"""The platforms' key sets (JWKS), cached in MongoDB so a launch does not fetch them.

pylti1p3 fetches the platform's JWKS over HTTP on every launch: a round trip to the LMS
inside every launch, and a dependency on the LMS answering quickly. Here a key set is kept
for ``TTL`` (shared by every app process, expired by a TTL index) and fetched again at
once when a launch names a key id the cached set lacks, so a key rotation on the platform
still works. Such a forced refetch happens at most once per ``MIN_REFETCH`` per key-set
URL, so tokens with made-up key ids cannot make us hammer the platform.
"""

from __future__ import annotations

import datetime as dt

import requests
from mongoengine.connection import get_db
from pylti1p3.exception import LtiKeyException

from mappings.models import utcnow

COLLECTION = "lti_platform_keysets"
TTL = dt.timedelta(minutes=5)
MIN_REFETCH = dt.timedelta(seconds=10)
TIMEOUT = 10  # seconds for the HTTP fetch

_indexed: set[str] = set()


def _collection():
    db = get_db()
    col = db[COLLECTION]
    if db.name not in _indexed:
        col.create_index("expires_at", expireAfterSeconds=0, name="expires_ttl")
        _indexed.add(db.name)
    return col


def _fetch(url: str, session: requests.Session | None) -> dict:
    http = session or requests
    try:
        response = http.get(url, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise LtiKeyException(f"Error while fetching the public key URL {url}: {exc}") from exc
    try:
        key_set = response.json()
    except ValueError as exc:
        raise LtiKeyException(f"Invalid response while fetching the platform's public key "
                              f"from {url}. Must be JSON.") from exc
    if not isinstance(key_set, dict) or not isinstance(key_set.get("keys"), list):
        raise LtiKeyException(f"The platform's key set at {url} has no 'keys' list.")
    return key_set


def _store(url: str, key_set: dict) -> None:
    now = utcnow()
    _collection().replace_one({"_id": url}, {"_id": url, "key_set": key_set,
                                             "fetched_at": now, "expires_at": now + TTL},
                              upsert=True)


def key_set(url: str, session: requests.Session | None = None) -> dict:
    """The platform's key set: cached if fetched less than ``TTL`` ago, else fetched."""
    doc = _collection().find_one({"_id": url, "expires_at": {"$gt": utcnow()}})
    if doc is not None:
        return doc["key_set"]
    fresh = _fetch(url, session)
    _store(url, fresh)
    return fresh


def refetch(url: str, session: requests.Session | None = None) -> dict | None:
    """Fetch the key set again because a token names a key id it lacks; None when it was
    fetched less than ``MIN_REFETCH`` ago (nothing new to expect)."""
    now = utcnow()
    doc = _collection().find_one({"_id": url}, {"fetched_at": 1})
    if doc is not None and _aware(doc["fetched_at"]) > now - MIN_REFETCH:
        return None
    fresh = _fetch(url, session)
    _store(url, fresh)
    return fresh


def forget(url: str | None = None) -> None:
    """Drop the cached key set of one URL (or all): the next launch fetches it."""
    _collection().delete_many({} if url is None else {"_id": url})


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
