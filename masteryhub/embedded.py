"""The embedded database: SecantusDB run as a child process with its data in ``DATA_DIR/db``.

Why a child process: SecantusDB is GPL-2.0 and we keep its code out of our process; a
child also survives Flask's reloader and lets CLI commands share one running server.

One server per ``DATA_DIR`` is guaranteed by an exclusive ``flock`` on ``DATA_DIR/db.lock``
that the server process itself holds (it inherits the locked descriptor), so the lock lives
exactly as long as the database does, whoever started it. Its address is kept in
``DATA_DIR/db.json`` for other commands to find.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pymongo
import pymongo.errors

STATE_FILE = "db.json"
LOCK_FILE = "db.lock"
LOG_FILE = "db.log"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class EmbeddedError(RuntimeError):
    """A problem an operator can act on; the message says what to do."""


class AlreadyRunning(EmbeddedError):
    def __init__(self, data_dir: Path, state: ServerState | None):
        self.state = state
        if state is None:
            detail = "its address is unknown (DATA_DIR/db.json is missing)"
        else:
            owner = (f"owned by Mastery Hub process {state.owner_pid}" if state.owner_pid
                     else "started by `masteryhub db start`")
            detail = f"pid {state.pid}, {state.uri}, {owner}"
        super().__init__(
            f"The embedded database for {data_dir} is already running ({detail}). "
            "Stop the other Mastery Hub first (Ctrl-C, or `masteryhub db stop`), "
            "or set MASTERYHUB_DATA_DIR to another directory."
        )


@dataclass(frozen=True)
class ServerState:
    pid: int
    port: int
    uri: str
    storage: str
    owner_pid: int | None  # the `serve` process that stops it on exit; None when detached
    started_at: float


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the database if the process that started it dies (even SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    # Ctrl-C in the terminal reaches the whole foreground group; the parent stops us in
    # order instead, after the app has let go of its connections.
    os.setpgrp()


class EmbeddedServer:
    """Start, find and stop the SecantusDB server that belongs to one ``DATA_DIR``."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1"):
        self.data_dir = Path(data_dir)
        self.host = host
        self.storage = self.data_dir / "db"
        self.state_path = self.data_dir / STATE_FILE
        self.lock_path = self.data_dir / LOCK_FILE
        self.log_path = self.data_dir / LOG_FILE
        self.process: subprocess.Popen[bytes] | None = None

    # -- discovery -------------------------------------------------------------------
    def _lock_is_held(self) -> bool:
        if not self.lock_path.exists():
            return False
        with open(self.lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return True
                raise
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def read_state(self) -> ServerState | None:
        try:
            return ServerState(**json.loads(self.state_path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def running(self) -> ServerState | None:
        """The live server for this DATA_DIR, or None (a stale db.json is cleaned up)."""
        state = self.read_state()
        if self._lock_is_held():
            return state  # None while a server is still starting and has not written it
        if state is not None:
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
        return None

    # -- lifecycle -------------------------------------------------------------------
    def start(self, *, detached: bool = False, port: int | None = None) -> ServerState:
        """Start the server and wait until it answers a ping.

        ``detached`` servers outlive this process (``masteryhub db start``); otherwise the
        server dies with us, even on SIGKILL, through ``PR_SET_PDEATHSIG``.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.lock_path, "a+")  # noqa: SIM115 - handed to the child below
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise AlreadyRunning(self.data_dir, self.read_state()) from None
                raise
            port = port or free_port(self.host)
            self.storage.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "secantus", "--host", self.host, "--port", str(port),
                   "--storage-path", str(self.storage), "--log-level", "WARNING"]
            log = open(self.log_path, "ab")  # noqa: SIM115 - closed right after spawn
            try:
                self.process = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    pass_fds=(lock.fileno(),), cwd=self.storage,
                    preexec_fn=os.setsid if detached else _die_with_parent,
                )
            finally:
                log.close()
        finally:
            # The child holds the lock now (same open file description); we let go of ours
            # so the lock's life is exactly the server's life.
            lock.close()
        uri = f"mongodb://{self.host}:{port}/?directConnection=true"
        state = ServerState(pid=self.process.pid, port=port, uri=uri, storage=str(self.storage),
                            owner_pid=None if detached else os.getpid(), started_at=time.time())
        try:
            self._wait_until_ready(uri)
        except BaseException:
            self._terminate(self.process.pid)
            raise
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state)))
        tmp.replace(self.state_path)
        return state

    def _wait_until_ready(self, uri: str) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=250)
        try:
            while True:
                if self.process.poll() is not None:
                    raise EmbeddedError(
                        f"The embedded database exited at start (code {self.process.returncode})."
                        f" Last lines of {self.log_path}:\n{self._log_tail()}")
                try:
                    client.admin.command("ping")
                    return
                except pymongo.errors.PyMongoError:
                    if time.monotonic() > deadline:
                        raise EmbeddedError(
                            f"The embedded database did not answer within {START_TIMEOUT_S:.0f} s;"
                            f" see {self.log_path}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> bool:
        """Stop the server for this DATA_DIR; True if one was running."""
        state = self.running()
        pid = self.process.pid if self.process is not None else (state.pid if state else None)
        if pid is None:
            return False
        self._terminate(pid)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        return True

    def _terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.pid == pid:
                if self.process.poll() is not None:
                    break
            elif not _pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if self.process is not None and self.process.pid == pid:
                self.process.wait(5)
        # Wait for the lock to be released too: the next start must not race a dying server.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._lock_is_held() and time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def database_uri(data_dir: Path, mongodb_uri: str | None) -> Iterator[str]:
    """The URI a CLI command should use: the configured one, the running embedded server's,
    or a server started just for this command and stopped after it."""
    if mongodb_uri:
        yield mongodb_uri
        return
    server = EmbeddedServer(data_dir)
    state = server.running()
    if state is not None:
        yield state.uri
        return
    state = server.start()
    try:
        yield state.uri
    finally:
        server.stop()
