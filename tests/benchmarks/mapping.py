"""Mapping worker benchmark (``make bench``): throughput and freshness.

1. Throughput: 10,000 statements from 1,000 learners POSTed to the LRS over HTTP in
   batches of 100 (the app under gunicorn, 2 workers, mapping worker off) -- the LRS
   ingest rate -- then the mapping worker catches up on them with 20 rules over 200
   competencies. Twice: learners seen for the first time (their learner and progress
   records are created), then 10,000 more statements of the same learners (the steady
   state: their records are replaced). The worker must be at least as fast as the LRS
   ingests, so it never falls behind: the ratio worker / LRS ingest is printed. Raw pymongo
   ``insert_many`` of the same LRS documents into the same server (the LRS's ceiling) is
   shown for reference.
2. Freshness: the app (`masteryhub serve`, worker thread) receives one statement every
   20 ms (50/s) for 500 statements; for each, the time from the POST being acknowledged to
   the learner's mastery record counting it. p50/p95.

Run: ``make bench`` or ``.venv/bin/python tests/benchmarks/mapping.py``.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchkit import App
from lrs_ingest import http_ingest, raw_ingest

from lrs.store import StatementStore
from mappings import catalog as catalog_module
from mappings.frameworks import parse_yaml_framework, save_framework
from mappings.identity import learner_id_for
from mappings.models import RuleSet
from mappings.records import PROGRESS, body_of, mastery_of
from mappings.rules import load_ruleset
from mappings.worker import WORKER_ID, Worker
from masteryhub.embedded import EmbeddedServer, free_port

STRANDS, PER_STRAND = 20, 10
LEARNERS = 1000
N = 10_000
VERBS = ["http://adlnet.gov/expapi/verbs/passed", "http://adlnet.gov/expapi/verbs/failed"]


def framework_yaml() -> str:
    lines = ["id: bench", "title: Benchmark framework", "scale: four-level",
             "calculation: decaying_average(0.65)", "competencies:"]
    for s in range(STRANDS):
        lines += [f"  - id: s{s}", f"    code: S{s}", f"    statement: Strand {s}",
                  "    rollup: {method: average}", "    children:"]
        lines += [f"      - {{id: s{s}-c{c}, code: S{s}.{c}, statement: Competency {s}.{c}}}"
                  for c in range(PER_STRAND - 1)]
    lines += ["credit_rules:",
              "  - {id: bench-credit, name: Benchmark credit, competencies: all, "
              "min_percent: 70}"]
    return "\n".join(lines) + "\n"


def rules_yaml() -> str:
    lines = ["ruleset: bench", "defaults: {source_type: online_course}", "rules:"]
    for s in range(STRANDS):  # 20 rules, each mapping a unit's quizzes to its competency
        lines += [f"  - id: strand-{s}", "    match:", f"      verb: [{', '.join(VERBS)}]",
                  f"      activity: {{glob: \"https://courses.example.com/s{s}/*/quiz-*\"}}",
                  "    evidence:", f"      - {{competency: S{s}.0, score: result}}",
                  f"      - {{competency: S{s}.1, score: result}}"]
    return "\n".join(lines) + "\n"


def statement(rng: random.Random, learner: int | None = None) -> dict:
    learner = rng.randrange(LEARNERS) if learner is None else learner
    strand = rng.randrange(STRANDS)
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "actor": {"name": f"Learner {learner}",
                  "mbox": f"mailto:learner{learner}@school.example.edu"},
        "verb": {"id": rng.choice(VERBS)},
        "object": {"id": f"https://courses.example.com/s{strand}/c{rng.randrange(9)}/"
                         f"quiz-{rng.randrange(5)}"},
        "result": {"score": {"scaled": round(rng.random(), 2)}},
        "timestamp": f"2026-11-{1 + rng.randrange(28):02d}T10:00:00Z",
    }


def setup_catalog() -> None:
    save_framework(parse_yaml_framework(framework_yaml(), filename="bench.yaml"))
    text = rules_yaml()
    ruleset = load_ruleset(text, filename="bench-rules.yaml",
                           competencies=catalog_module.load().infos)
    RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
    catalog_module.bump()


def catch_up(db) -> float:
    """Statements/s of a mapping worker catching up from its position to the watermark."""
    before = (db["worker_state"].find_one({"_id": WORKER_ID}) or {}).get("position", 0)
    worker = Worker(db, name="bench")
    started = time.perf_counter()
    while True:
        result = worker.run_once()
        if result is not None and result.statements == 0:
            break
    elapsed = time.perf_counter() - started
    done = db["worker_state"].find_one({"_id": WORKER_ID})["position"] - before
    assert done >= N, done
    worker.release()  # hand over to the next worker at once
    return done / elapsed


def throughput(data_dir: Path, uri: str, db, rng: random.Random
               ) -> list[tuple[float, float, float]]:
    """Two rounds -- learners seen for the first time, then the same learners again (their
    records exist: the steady state) -- each (worker statements/s, LRS HTTP ingest
    statements/s, raw insert_many statements/s)."""
    from lrs.auth import create_credential

    store = StatementStore(db)
    store.ensure_indexes()
    credential, secret = create_credential("Bench ingest", ["all"])
    authority = credential.authority("http://127.0.0.1")
    rounds = []
    for first in (True, False):
        app = App(data_dir, uri, db.name, WORKER="off")
        try:
            if first:
                http_ingest(app, (credential.key, secret), [statement(rng) for _ in range(100)],
                            1)
            lrs = http_ingest(app, (credential.key, secret),
                              [statement(rng) for _ in range(N)], 1)
        finally:
            app.stop()
        store.flush()
        raw = raw_ingest(db, [statement(rng) for _ in range(N)], authority, credential.key)
        rounds.append((catch_up(db), lrs, raw))
    return rounds


def freshness(data_dir: Path, uri: str, db, rng: random.Random) -> list[float]:
    from lrs.auth import create_credential

    credential, secret = create_credential("Bench provider", ["all"])
    port = free_port()
    env = dict(os.environ, MASTERYHUB_DATA_DIR=str(data_dir), MASTERYHUB_MONGODB_URI=uri,
               MASTERYHUB_DB_NAME=db.name, MASTERYHUB_PORT=str(port),
               MASTERYHUB_LOG_LEVEL="WARNING", MASTERYHUB_WORKER="thread")
    app = subprocess.Popen([sys.executable, "-m", "masteryhub.cli", "serve"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("app did not start")
            time.sleep(0.2)
        # Let the worker catch up with the throughput phase's statements first.
        while db["worker_state"].find_one({"_id": WORKER_ID})["position"] < \
                StatementStore(db).last_seq():
            time.sleep(0.1)
        session = requests.Session()
        token = base64.b64encode(f"{credential.key}:{secret}".encode()).decode()
        session.headers.update({"Authorization": f"Basic {token}",
                                "X-Experience-API-Version": "1.0.3",
                                "Content-Type": "application/json"})
        pending: dict[str, tuple[str, float]] = {}  # evidence id -> (progress id, posted)
        latencies: list[float] = []
        lock = threading.Lock()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set() or pending:
                with lock:
                    wanted = {m for m, _ in pending.values()}
                if wanted:
                    for doc in db[PROGRESS].find({"_id": {"$in": list(wanted)}}):
                        now = time.perf_counter()
                        records = mastery_of(doc["learner"], doc["framework"], body_of(doc))
                        with lock:
                            for m in records.values():
                                for e in m["evidence"]:
                                    if e in pending:
                                        latencies.append(now - pending.pop(e)[1])
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for _ in range(500):
            stmt = statement(rng)
            strand = stmt["object"]["id"].split("/")[3][1:]
            learner = learner_id_for("mbox|" + stmt["actor"]["mbox"])
            key = f"{stmt['id']}|{learner}|s{strand}-c0|bench:strand-{strand}"
            started = time.perf_counter()
            response = session.post(url + "/xapi/statements", data=orjson.dumps(stmt))
            assert response.status_code == 200, response.text
            with lock:
                pending[key] = (f"{learner}|bench", time.perf_counter())
            time.sleep(max(0.0, 0.02 - (time.perf_counter() - started)))
        done.set()
        watcher.join(60)
        if pending:
            raise RuntimeError(f"{len(pending)} statements never reached mastery")
        return latencies
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(30)


def main() -> int:
    rng = random.Random(20261123)
    workdir = Path(tempfile.mkdtemp(prefix="masteryhub-bench-map-"))
    server = EmbeddedServer(workdir)
    state = server.start()
    try:
        from masteryhub.database import connect

        db = connect(state.uri, "bench_mapping")
        setup_catalog()
        print(f"Mapping benchmark — {STRANDS * PER_STRAND} competencies, "
              f"{len(rules_yaml().split('- id:')) - 1} rules, {LEARNERS} learners")
        for label, (rate, lrs, raw) in zip(
                ("learners new", "same learners again"), throughput(workdir, state.uri, db, rng),
                strict=True):
            print(f"-- {N:,} statements, {label}")
            print(f"raw pymongo insert_many of LRS documents:    {raw:8.0f} statements/s")
            print(f"LRS HTTP ingest, batches of 100, 1 client:   {lrs:8.0f} statements/s")
            print(f"mapping worker catching up:                  {rate:8.0f} statements/s "
                  f"(ratio worker/LRS ingest {rate / lrs:.2f}, "
                  f"worker/raw insert {rate / raw:.2f})")
        latencies = sorted(freshness(workdir, state.uri, db, rng))
        p50 = statistics.median(latencies) * 1000
        p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
        print(f"freshness (POST acknowledged -> mastery counts it), 500 statements at "
              f"50/s: p50 {p50:.0f} ms  p95 {p95:.0f} ms")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
