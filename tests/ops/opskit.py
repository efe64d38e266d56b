"""Helpers of the operations tests: real `masteryhub` processes (serve, worker, commands)
on a real database, statements to stream at them, and snapshots of derived state.

Not a conftest: tests import it by name (``tests/ops`` is on ``sys.path`` for them), and
nothing here is collected as a test.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "mappings" / "data" / "sample_rules.yaml"
LEAVES = ["ALG.1.1", "ALG.1.2", "ALG.1.3", "ALG.1.4", "ALG.2.1", "ALG.2.2", "ALG.2.3",
          "ALG.3.1", "ALG.3.2", "ALG.4.1", "ALG.4.2", "ALG.4.3", "ALG.4.4"]
PASSED = "http://adlnet.gov/expapi/verbs/passed"
VOIDED = "http://adlnet.gov/expapi/verbs/voided"
SECRET_KEY = "ops-tests-secret-key-0123456789abcdef"


def basic_auth(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def env_for(uri: str | None, db_name: str | None, data_dir: Path, **extra: str) -> dict:
    """A child's environment: none of ours MASTERYHUB_* settings, then these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERYHUB_")}
    env.update(MASTERYHUB_DATA_DIR=str(data_dir), MASTERYHUB_LOG_LEVEL="WARNING",
               MASTERYHUB_SECRET_KEY=SECRET_KEY)
    if uri:
        env["MASTERYHUB_MONGODB_URI"] = uri
    if db_name:
        env["MASTERYHUB_DB_NAME"] = db_name
    env.update(extra)
    return env


def cli(args: Sequence[str], env: dict, *, timeout: float = 120,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a `masteryhub` command to completion (stdout and stderr captured, as bytes)."""
    return subprocess.run([sys.executable, "-m", "masteryhub.cli", *args], env=env,
                          input=input, capture_output=True, timeout=timeout, check=False)


class Process:
    """A long-running `masteryhub` process (serve or worker) with its output in a file."""

    def __init__(self, args: Sequence[str], env: dict, log: Path):
        self.args = list(args)
        self.env = env
        self.log_path = log
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "masteryhub.cli",
                                             *self.args], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash: no cleanup of any kind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class Serve(Process):
    """`masteryhub serve` on a free port, ready when /healthz answers 200."""

    def __init__(self, env: dict, log: Path, *, port: int | None = None,
                 workers: int | None = None):
        from masteryhub.embedded import free_port

        self.port = port or free_port()
        args = ["serve", "--port", str(self.port)]
        if workers:
            args += ["--workers", str(workers)]
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(args, env, log)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited ({self.process.returncode}):\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"serve did not become healthy:\n{self.log()}")

    def restart(self) -> None:
        self.start()
        self.wait_ready()


def quiz(email: str, code: str, scaled: float, n: int, rng: random.Random) -> dict:
    """A provider's quiz result; the sample rules map it to the quiz's competency."""
    day = 1 + n % 28
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "actor": {"objectType": "Agent", "name": email.split("@")[0],
                  "mbox": f"mailto:{email}"},
        "verb": {"id": PASSED, "display": {"en-US": "passed"}},
        "object": {"objectType": "Activity",
                   "id": f"https://courses.example.com/algebra-1/{code}/quiz-{n}",
                   "definition": {"name": {"en-US": f"{code} quiz {n}"}}},
        "result": {"score": {"scaled": scaled}, "success": scaled >= 0.8},
        "timestamp": f"2026-10-{day:02d}T{n % 24:02d}:{n % 60:02d}:00.000Z",
    }


def void(target: str, rng: random.Random) -> dict:
    return {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "actor": {"objectType": "Agent", "mbox": "mailto:teacher@school.example.edu"},
            "verb": {"id": VOIDED, "display": {"en-US": "voided"}},
            "object": {"objectType": "StatementRef", "id": target}}


def load_sample_catalog() -> None:
    """The sample framework and rules, into mongoengine's current database."""
    from mappings import catalog as catalog_module
    from mappings.frameworks import sample_framework, save_framework
    from mappings.models import RuleSet, ensure_indexes
    from mappings.rules import load_ruleset

    ensure_indexes()
    save_framework(sample_framework())
    text = RULES.read_text()
    ruleset = load_ruleset(text, filename="sample_rules.yaml",
                           competencies=catalog_module.load().infos)
    RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
    catalog_module.bump()


def snapshot(db) -> dict:
    """Derived state that must not depend on how (or by how many workers) it was made."""
    from mappings import evidence as evidence_store
    from mappings import records

    held = records.load(db, db["progress"].distinct("learner")).values()
    mastery = {d["_id"]: (d.get("points"), d.get("level"), d.get("mastered"),
                          sorted(d.get("evidence", [])))
               for h in held for d in h.mastery.values()}
    credits = {d["_id"]: (d["status"], sorted(d["mastered"]), d["percent"], d.get("awarded_at"))
               for h in held for d in h.credits.values()}
    stored = list(evidence_store.all_records(db))
    assert len(stored) == len({d["_id"] for d in stored}), "an evidence record stored twice"
    evidence = {d["_id"]: (d["points"], d["status"], bool(d.get("voided")),
                           [(a["action"], a.get("points")) for a in d.get("actions", [])])
                for d in stored}
    return {"mastery": mastery, "credits": credits, "evidence": evidence}


def wait_caught_up(db, timeout: float = 60) -> None:
    """Until every write has finished (watermark = last sequence) and the mapper's
    position has reached it."""
    from lrs.store import StatementStore
    from mappings.worker import WORKER_ID

    store = StatementStore(db)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watermark = store.watermark().seq
        state = db["worker_state"].find_one({"_id": WORKER_ID}) or {}
        if watermark == store.last_seq() and state.get("position", 0) >= watermark:
            return
        time.sleep(0.05)
    raise AssertionError(f"not caught up: watermark {store.watermark().seq}, last "
                         f"{store.last_seq()}, state {db['worker_state'].find_one()}")


class Streamer:
    """POSTs batches of statements from a few threads and records which were
    acknowledged (200). A thread stops at its first failure, so when the server dies the
    unacknowledged batches are exactly those not in ``acked``."""

    def __init__(self, batches: list[list[dict]], auth: str, *, threads: int = 4,
                 timeout: float = 30):
        self.batches = batches
        self.timeout = timeout
        self.auth = auth
        self.threads = threads
        self.acked: set[int] = set()
        self.failures: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def run(self, urls: Sequence[str], indices: Sequence[int]) -> list[threading.Thread]:
        """Start posting ``indices`` (round-robin over ``urls``); returns the threads."""
        queue = list(indices)
        queue.reverse()

        def worker(n: int) -> None:
            http = requests.Session()
            http.headers.update({"Authorization": self.auth,
                                 "X-Experience-API-Version": "1.0.3",
                                 "Content-Type": "application/json"})
            while True:
                with self._lock:
                    if not queue:
                        return
                    index = queue.pop()
                url = urls[index % len(urls)]
                try:
                    response = http.post(url + "/xapi/statements",
                                         json=self.batches[index], timeout=self.timeout)
                except requests.RequestException as exc:
                    with self._lock:
                        self.failures.append((index, type(exc).__name__))
                    return
                with self._lock:
                    if response.status_code == 200:
                        assert response.json() == [s["id"] for s in self.batches[index]]
                        self.acked.add(index)
                    else:
                        self.failures.append((index, f"{response.status_code} "
                                                     f"{response.text[:200]}"))
                        return

        started = [threading.Thread(target=worker, args=(n,), daemon=True)
                   for n in range(self.threads)]
        for t in started:
            t.start()
        return started

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)
