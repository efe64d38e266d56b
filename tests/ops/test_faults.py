"""Faults: SIGKILL the app, or the database child process, in the middle of a stream of
5,000 statements (100 POSTs of 50, four clients), restart, re-send what was not
acknowledged, and check that every acknowledged statement is there and none twice.

Re-sending is safe because the LRS accepts a statement whose id is stored with the same
content (xAPI Part Three §2.1.2), so a batch that was half written when the process died
is simply completed by the retry.

The mapping worker killed mid-stream is covered by
tests/mappings/test_engine_e2e.py::test_worker_killed_mid_stream_ends_equal_to_recompute
(one worker process, killed and restarted) and tests/ops/test_scale_out.py (the lease
holder of two is killed; the other takes over).
"""

from __future__ import annotations

import random
import signal
import time

import pymongo
import pytest
from opskit import LEAVES, Serve, Streamer, basic_auth, env_for, quiz

from masteryhub.embedded import EmbeddedServer

pytestmark = pytest.mark.slow

STATEMENTS = 5000
BATCH = 50


def stream(seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    statements = [quiz(f"learner{n % 97}@school.example", LEAVES[n % 13],
                       round(rng.random(), 2), n, rng) for n in range(STATEMENTS)]
    return [statements[i:i + BATCH] for i in range(0, STATEMENTS, BATCH)]


def stream_until_killed(streamer: Streamer, url: str, kill_after: int, kill) -> None:
    """Post every batch; once ``kill_after`` are acknowledged, call ``kill``."""
    threads = streamer.run([url], range(len(streamer.batches)))
    deadline = time.monotonic() + 60
    while streamer.acked_count() < kill_after:
        assert time.monotonic() < deadline, streamer.failures
        assert any(t.is_alive() for t in threads), "the stream ended before the kill"
        time.sleep(0.001)
    kill()
    for thread in threads:
        thread.join(60)


def check_stored(db, batches: list[list[dict]], acked: set[int], *, complete: bool) -> dict:
    """Every acknowledged statement present, none twice; with ``complete``, all of them."""
    stored = [d["sid"] for d in db["lrs_statements"].find({}, {"sid": 1})]
    assert len(stored) == len(set(stored)), "a statement is stored twice"
    present = set(stored)
    lost = [s["id"] for i in acked for s in batches[i] if s["id"] not in present]
    assert lost == [], f"{len(lost)} acknowledged statement(s) lost, e.g. {lost[:3]}"
    unacked = [s["id"] for i in range(len(batches)) if i not in acked for s in batches[i]]
    if complete:
        assert present == {s["id"] for b in batches for s in b}
    return {"acknowledged": sum(len(batches[i]) for i in acked),
            "stored_before_retry": len(present),
            "unacknowledged_but_stored": sum(1 for sid in unacked if sid in present)}


def retry_the_rest(streamer: Streamer, url: str) -> None:
    streamer.failures.clear()
    rest = [i for i in range(len(streamer.batches)) if i not in streamer.acked]
    for thread in streamer.run([url], rest):
        thread.join(60)
    assert streamer.failures == []
    assert streamer.acked == set(range(len(streamer.batches)))


@pytest.mark.timeout(120)
def test_app_killed_mid_stream_loses_no_acknowledged_statement(tmp_path):
    from lrs.auth import create_credential
    from masteryhub.database import connect

    rng = random.Random()
    kill_after = rng.randrange(15, 70)
    server = EmbeddedServer(tmp_path / "database")
    state = server.start()
    app = None
    try:
        db = connect(state.uri, "faults")
        credential, secret = create_credential("Provider", ["statements/write"])
        env = env_for(state.uri, "faults", tmp_path / "data", MASTERYHUB_WORKER="off")
        app = Serve(env, tmp_path / "app.log")
        batches = stream(rng.randrange(1 << 30))
        streamer = Streamer(batches, basic_auth(credential.key, secret), threads=4)
        stream_until_killed(streamer, app.url, kill_after, app.kill)
        assert streamer.failures, "no request was cut by the kill"
        figures = check_stored(db, batches, streamer.acked, complete=False)
        print(f"app SIGKILLed after {kill_after} acknowledged batches: {figures}")
        app.restart()
        retry_the_rest(streamer, app.url)
        check_stored(db, batches, streamer.acked, complete=True)
    finally:
        if app is not None:
            app.stop()
        server.stop()


@pytest.mark.timeout(150)
def test_database_killed_mid_stream_loses_no_acknowledged_statement(tmp_path):
    """The SecantusDB child that `masteryhub serve` started is SIGKILLed; serve is
    restarted on the same DATA_DIR and the database recovers from its journal.

    Meanwhile new requests get 503 within DB_TIMEOUT_MS, but a write that was in flight
    at the kill hangs for up to lrs.store.WRITE_TIMEOUT_S (20 s): its `pymongo.timeout`
    also bounds the retry's server selection, which then waits for a server that is gone.
    The clients here give up after 5 s (unacknowledged, so re-sent)."""
    from lrs.auth import create_credential
    from masteryhub.database import connect

    rng = random.Random()
    kill_after = rng.randrange(15, 70)
    data_dir = tmp_path / "data"
    env = env_for(None, None, data_dir, MASTERYHUB_WORKER="off",
                  MASTERYHUB_DB_TIMEOUT_MS="1500")
    app = Serve(env, tmp_path / "app.log")
    embedded = EmbeddedServer(data_dir)
    try:
        database = embedded.running()
        assert database is not None
        connect(database.uri, "masteryhub")
        credential, secret = create_credential("Provider", ["statements/write"])
        batches = stream(rng.randrange(1 << 30))
        streamer = Streamer(batches, basic_auth(credential.key, secret), threads=4,
                            timeout=5)

        def kill_database() -> None:
            import os

            os.kill(database.pid, signal.SIGKILL)

        stream_until_killed(streamer, app.url, kill_after, kill_database)
        assert streamer.failures and all(
            f[1].startswith("503") or f[1] in ("ReadTimeout", "ConnectionError")
            for f in streamer.failures), streamer.failures[:3]
        app.stop()
        assert app.process.returncode is not None
        app.restart()
        recovered = embedded.running()
        assert recovered is not None and recovered.pid != database.pid
        client = pymongo.MongoClient(recovered.uri)
        try:
            db = client["masteryhub"]
            figures = check_stored(db, batches, streamer.acked, complete=False)
            print(f"database SIGKILLed after {kill_after} acknowledged batches: {figures}")
            retry_the_rest(streamer, app.url)
            check_stored(db, batches, streamer.acked, complete=True)
        finally:
            client.close()
    finally:
        app.stop()
