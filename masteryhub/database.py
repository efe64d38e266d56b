"""One MongoDB connection per app, shared by mongoengine documents and raw pymongo code.

pymongo is used directly where mongoengine has no equivalent (bulk inserts, transactions);
both go through the same client so there is one pool and one set of timeouts.
"""

from __future__ import annotations

import os

import mongoengine
from pymongo.database import Database
from pymongo.uri_parser import parse_uri

ALIAS = mongoengine.DEFAULT_CONNECTION_NAME


def database_name(uri: str, default: str) -> str:
    """The database named in the URI path wins over ``MASTERYHUB_DB_NAME``."""
    return parse_uri(uri, warn=True).get("database") or default


_current: tuple[str, str, int, int] | None = None


def connect(uri: str, db_name: str, timeout_ms: int = 5000) -> Database:
    """Bind mongoengine's default alias to this database and return its pymongo handle.

    Connecting again to the same place in the same process reuses the client (a worker
    thread and the app share it); another place, or a forked child (gunicorn workers: a
    MongoClient must not cross a fork), gets a new one."""
    global _current
    wanted = (uri, db_name, timeout_ms, os.getpid())
    if _current == wanted:
        return mongoengine.get_db(ALIAS)
    mongoengine.disconnect(alias=ALIAS)
    mongoengine.connect(
        db=db_name,
        host=uri,
        alias=ALIAS,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        uuidRepresentation="standard",
        tz_aware=True,
    )
    _current = wanted
    return mongoengine.get_db(ALIAS)
