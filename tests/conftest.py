"""Shared fixtures: one real MongoDB-wire server per session, a fresh database per test.

``TEST_MONGODB_URI`` runs the same suite against a real mongod (or replica set) instead of
the in-process SecantusDB server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
from xapi_auth import basic_auth

from masteryhub.app import create_app
from masteryhub.config import Settings


@pytest.fixture(scope="session")
def mongo_server_uri() -> Iterator[str]:
    external = os.environ.get("TEST_MONGODB_URI")
    if external:
        yield external
        return
    from secantus.server import SecantusDBServer

    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=":memory:")
    server.start()
    host, port = server.address
    try:
        yield f"mongodb://{host}:{port}/?directConnection=true"
    finally:
        # Without the shutdown the accept loop waits out its 2 s poll before stop returns.
        with contextlib.suppress(OSError):
            server._socket.shutdown(socket.SHUT_RDWR)
        server.stop()


@pytest.fixture
def db_name(mongo_server_uri: str) -> Iterator[str]:
    """A database of its own for each test, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_server_uri)
    with contextlib.suppress(pymongo.errors.PyMongoError):
        client.drop_database(name)
    client.close()


@pytest.fixture
def settings(tmp_path: Path, db_name: str, mongo_server_uri: str) -> Settings:
    return Settings.from_env({
        "MASTERYHUB_DATA_DIR": str(tmp_path / "data"),
        "MASTERYHUB_MONGODB_URI": mongo_server_uri,
        "MASTERYHUB_DB_NAME": db_name,
        "MASTERYHUB_BASE_URL": "http://localhost",
    })


@pytest.fixture
def app(settings: Settings):
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    """The pymongo database the app uses, for asserting what was stored."""
    return app.extensions["masteryhub.db"]


@pytest.fixture
def xapi_credential(app) -> tuple[str, str]:
    """(key, secret) of a provider credential with every scope."""
    from lrs.auth import create_credential

    credential, secret = create_credential("Test provider", ["all"])
    return credential.key, secret


@pytest.fixture
def xapi_headers(xapi_credential) -> dict[str, str]:
    """Headers a conformant xAPI client sends: Basic credentials and the version."""
    return {"Authorization": basic_auth(*xapi_credential), "X-Experience-API-Version": "1.0.3"}


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app on a real loopback HTTP server (for real clients: tincan, browsers);
    yields its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
