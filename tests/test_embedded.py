"""The embedded SecantusDB child process: starts, keeps data across restarts, never lingers."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pymongo
import pytest

from masteryhub.embedded import (
    AlreadyRunning,
    EmbeddedError,
    EmbeddedServer,
    _pid_alive,
    database_uri,
)

pytestmark = pytest.mark.slow


def wait_dead(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_restart_keeps_data_and_stop_leaves_no_process(tmp_path):
    server = EmbeddedServer(tmp_path)
    state = server.start()
    assert server.running() == state
    with pymongo.MongoClient(state.uri) as client:
        client.hub.things.insert_one({"_id": 1, "kept": True})
    assert server.stop()
    server.process.wait(5)  # reap our child so its pid really disappears
    assert wait_dead(state.pid)
    assert server.running() is None
    assert not (tmp_path / "db.json").exists()

    again = EmbeddedServer(tmp_path)
    state2 = again.start()
    try:
        with pymongo.MongoClient(state2.uri) as client:
            assert client.hub.things.find_one({"_id": 1}) == {"_id": 1, "kept": True}
    finally:
        again.stop()


def test_second_start_on_same_data_dir_fails_clearly(tmp_path):
    first = EmbeddedServer(tmp_path)
    state = first.start()
    try:
        with pytest.raises(AlreadyRunning) as info:
            EmbeddedServer(tmp_path).start()
        message = str(info.value)
        assert "already running" in message and f"pid {state.pid}" in message
        assert "MASTERYHUB_DATA_DIR" in message
        assert "WiredTiger" not in message
        # A CLI command shares the running server instead of starting another.
        with database_uri(tmp_path, None) as uri:
            assert uri == state.uri
    finally:
        first.stop()


def test_server_dies_with_its_parent_even_on_sigkill(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from masteryhub.embedded import EmbeddedServer
        state = EmbeddedServer({str(tmp_path)!r}).start()
        print(state.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    db_pid = int(parent.stdout.readline())
    assert _pid_alive(db_pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(5)
    assert wait_dead(db_pid), "the database outlived the process that started it"
    # The lock went with it: a new server can start on the same data.
    server = EmbeddedServer(tmp_path)
    server.start()
    server.stop()


def test_failed_start_reports_the_cause_and_releases_the_lock(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EmbeddedError) as info:
            EmbeddedServer(tmp_path).start(port=port)
    assert "exited at start" in str(info.value)
    assert "db.log" in str(info.value)
    server = EmbeddedServer(tmp_path)
    assert server.running() is None
    server.start()
    server.stop()
