"""LRS ingest and query benchmark (``make bench``), as ratios against raw pymongo.

One SecantusDB server (child process, on disk, as `make run` uses it) and one app server
(`masteryhub serve --workers 2`, gunicorn) are started for the run. Figures:

1. HTTP ingest of 10,000 realistic statements in batches of 100: one client, then four
   concurrent clients; and raw ``insert_many`` of the same documents, as the LRS stores
   them, into a collection with the same indexes on the same server. Ratio LRS / raw.
2. Our own CPU time per statement (parse + validate + build the stored document), no
   database involved.
3. With 50,000 statements stored: one-client ingest again (must not slow down), and
   p50/p95 latency of 200 filtered queries each for agent, verb, activity, agent+verb.

Run: ``make bench`` or ``.venv/bin/python tests/benchmarks/lrs_ingest.py``.
"""

from __future__ import annotations

import base64
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pymongo
import requests

from lrs import keys as K
from lrs.store import StatementStore, iso, utcnow
from lrs.validation import validate_statements
from masteryhub.embedded import EmbeddedServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchkit import App

BATCH = 100
N = 10_000
PRELOAD = 50_000
VERBS = ["http://adlnet.gov/expapi/verbs/completed", "http://adlnet.gov/expapi/verbs/passed",
         "http://adlnet.gov/expapi/verbs/failed", "http://adlnet.gov/expapi/verbs/attempted",
         "http://adlnet.gov/expapi/verbs/experienced"]


def make_statement(rng: random.Random) -> dict:
    learner = rng.randrange(500)
    unit = rng.randrange(40)
    lesson = rng.randrange(10)
    verb = rng.choice(VERBS)
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "actor": {"objectType": "Agent", "name": f"Learner {learner}",
                  "mbox": f"mailto:learner{learner}@school.example.edu"},
        "verb": {"id": verb, "display": {"en-US": verb.rsplit("/", 1)[1]}},
        "object": {"objectType": "Activity",
                   "id": f"https://courses.example.com/algebra/unit-{unit}/lesson-{lesson}",
                   "definition": {"name": {"en-US": f"Unit {unit} lesson {lesson}"},
                                  "description": {"en-US": "A lesson of the algebra course"},
                                  "type": "http://adlnet.gov/expapi/activities/lesson"}},
        "result": {"score": {"scaled": round(rng.random(), 2), "raw": rng.randrange(101),
                             "min": 0, "max": 100},
                   "success": rng.random() > 0.3, "completion": True,
                   "duration": f"PT{rng.randrange(1, 60)}M{rng.randrange(60)}S"},
        "context": {
            "registration": str(uuid.UUID(int=learner * 7919 + 1, version=4)),
            "contextActivities": {
                "parent": [{"id": f"https://courses.example.com/algebra/unit-{unit}"}],
                "grouping": [{"id": "https://courses.example.com/algebra"}]},
            "platform": "Example Online Courses",
            "extensions": {"https://courses.example.com/ext/attempt": rng.randrange(1, 4)}},
        "timestamp": f"2026-11-20T10:{rng.randrange(60):02d}:{rng.randrange(60):02d}.000Z",
    }


def batches(statements: list[dict]) -> list[bytes]:
    return [orjson.dumps(statements[i:i + BATCH]) for i in range(0, len(statements), BATCH)]


def session(key: str, secret: str) -> requests.Session:
    s = requests.Session()
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    s.headers.update({"Authorization": f"Basic {token}", "X-Experience-API-Version": "1.0.3",
                      "Content-Type": "application/json"})
    return s


def post_all(url: str, sess: requests.Session, bodies: list[bytes]) -> None:
    for body in bodies:
        response = sess.post(url + "/xapi/statements", data=body)
        if response.status_code != 200:
            raise RuntimeError(f"POST failed: {response.status_code} {response.text[:300]}")


def http_ingest(app: App, cred: tuple[str, str], statements: list[dict], clients: int) -> float:
    bodies = batches(statements)
    shards = [bodies[i::clients] for i in range(clients)]
    sessions = [session(*cred) for _ in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: post_all(app.url, sessions[i], shards[i]), range(clients)))
    return len(statements) / (time.perf_counter() - started)


def stored_documents(statements: list[dict], authority: dict, key: str, start: int) -> list:
    """The documents exactly as the LRS stores them (same code path, no HTTP, no checks)."""
    now = utcnow()
    docs = []
    for offset, stmt in enumerate(statements):
        full, added = StatementStore._complete(stmt, stmt["id"], iso(now), authority, "1.0.3")
        doc = {"_id": start + offset, "sid": stmt["id"], "j": orjson.dumps(full), "st": now,
               "k": sorted(K.statement_keys(full, key))}
        if added:
            doc["a"] = added
        docs.append(doc)
    return docs


def raw_ingest(db, statements: list[dict], authority: dict, key: str) -> float:
    """Raw insert_many into ``raw_baseline``, which is kept between rounds so that it grows
    like the LRS's own collection and both are measured on the same database state."""
    collection = db["raw_baseline"]
    collection.create_index("sid", unique=True)
    collection.create_index([("k", 1), ("_id", 1)])
    last = collection.find_one({}, {"_id": 1}, sort=[("_id", -1)])
    docs = stored_documents(statements, authority, key, (last["_id"] if last else 0) + 1)
    started = time.perf_counter()
    for i in range(0, len(docs), BATCH):
        collection.insert_many(docs[i:i + BATCH], ordered=False)
    return len(docs) / (time.perf_counter() - started)


def cpu_per_statement(statements: list[dict], authority: dict, key: str) -> float:
    bodies = batches(statements)
    started = time.process_time()
    for body in bodies:
        parsed = validate_statements(orjson.loads(body))
        stored_documents(parsed, authority, key, 1)
    return (time.process_time() - started) / len(statements) * 1e6


def query_latencies(app: App, cred: tuple[str, str], params: list[dict]) -> tuple[float, float]:
    sess = session(*cred)
    times = []
    for p in params:
        query = urllib.parse.urlencode(p)
        started = time.perf_counter()
        response = sess.get(f"{app.url}/xapi/statements?{query}")
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(response.text[:300])
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def main() -> int:
    rng = random.Random(20261123)
    workdir = Path(tempfile.mkdtemp(prefix="masteryhub-bench-"))
    db_server = EmbeddedServer(workdir)
    state = db_server.start()
    client = pymongo.MongoClient(state.uri)
    db = client["bench"]
    app = App(workdir, state.uri)
    try:
        from masteryhub.database import connect

        connect(state.uri, "bench")
        from lrs.auth import create_credential

        credential, secret = create_credential("Benchmark provider", ["all"])
        cred = (credential.key, secret)
        authority = credential.authority("http://127.0.0.1")
        print(f"Mastery Hub LRS benchmark — SecantusDB child process, gunicorn 2 workers, "
              f"batches of {BATCH}")

        cpu = cpu_per_statement([make_statement(rng) for _ in range(N)], authority,
                                credential.key)
        print(f"CPU per statement (parse + validate + build document): {cpu:.1f} µs")

        # Alternate LRS and raw rounds of 2,500 so both see the same database state and
        # noise; report the totals over 10,000 each.
        def alternate(clients: int) -> tuple[float, float]:
            lrs_time = raw_time = 0.0
            for _ in range(4):
                part = [make_statement(rng) for _ in range(N // 4)]
                lrs_time += len(part) / http_ingest(app, cred, part, clients)
                raw_time += len(part) / raw_ingest(db, [make_statement(rng)
                                                        for _ in range(N // 4)],
                                                   authority, credential.key)
            return N / lrs_time, N / raw_time

        http_ingest(app, cred, [make_statement(rng) for _ in range(1000)], 1)  # warm up
        one, raw = alternate(1)
        four, raw4 = alternate(4)
        print(f"raw pymongo insert_many (same docs, same indexes): {raw:8.0f} statements/s")
        print(f"LRS HTTP ingest, 1 client:                         {one:8.0f} statements/s "
              f"(ratio LRS/raw {one / raw:.2f})")
        print(f"LRS HTTP ingest, 4 clients:                        {four:8.0f} statements/s "
              f"(ratio LRS/raw {four / raw4:.2f}, raw alongside {raw4:.0f}/s)")

        store = StatementStore(db)
        have = db["lrs_statements"].estimated_document_count()
        started = time.perf_counter()
        while have < PRELOAD:
            chunk = [make_statement(rng) for _ in range(min(1000, PRELOAD - have))]
            for i in range(0, len(chunk), BATCH):
                store.insert(chunk[i:i + BATCH], authority=authority,
                             credential_key=credential.key)
            have += len(chunk)
        print(f"(preloaded to {have} statements in {time.perf_counter() - started:.0f} s)")

        loaded, raw_loaded = alternate(1)
        print(f"LRS HTTP ingest, 1 client, {have} stored:          {loaded:8.0f} statements/s "
              f"({loaded / one:.2f} of the empty-store rate; raw alongside {raw_loaded:.0f}/s, "
              f"ratio {loaded / raw_loaded:.2f})")

        agents = [json.dumps({"mbox": f"mailto:learner{rng.randrange(500)}@school.example.edu"})
                  for _ in range(200)]
        activities = [f"https://courses.example.com/algebra/unit-{rng.randrange(40)}/lesson-"
                      f"{rng.randrange(10)}" for _ in range(200)]
        cases = {
            "agent": [{"agent": a, "limit": 100} for a in agents],
            "verb": [{"verb": rng.choice(VERBS), "limit": 100} for _ in range(200)],
            "activity": [{"activity": a, "limit": 100} for a in activities],
            "agent+verb": [{"agent": a, "verb": rng.choice(VERBS), "limit": 100}
                           for a in agents],
        }
        for name, params in cases.items():
            p50, p95 = query_latencies(app, cred, params)
            print(f"GET statements?{name}&limit=100 with {have + N} stored: "
                  f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms")
    finally:
        app.stop()
        client.close()
        db_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
