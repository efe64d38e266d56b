"""Scale-out, proven locally: two app processes and two worker processes on one database
(a SecantusDB child process, on disk). Statements go to both apps at once; the worker
holding the lease is killed mid-stream and the other takes over. In the end every
statement is stored once, and every learner's mastery and credit equal a single-process
`recompute`."""

from __future__ import annotations

import random
import time

import pytest
from opskit import (
    LEAVES,
    Process,
    Serve,
    Streamer,
    basic_auth,
    env_for,
    load_sample_catalog,
    quiz,
    snapshot,
    void,
    wait_caught_up,
)

from mappings import evidence
from masteryhub.embedded import EmbeddedServer

pytestmark = pytest.mark.slow

LEARNERS = 30
QUIZZES = 600
VOIDS = 30
BATCH = 25


@pytest.mark.timeout(180)
def test_two_apps_two_workers_equal_one_recompute(tmp_path):
    from lrs.auth import create_credential
    from mappings.worker import WORKER_ID, recompute
    from masteryhub.database import connect

    rng = random.Random(20261123)
    server = EmbeddedServer(tmp_path / "database")
    state = server.start()
    apps: list[Serve] = []
    workers: list[Process] = []
    try:
        db = connect(state.uri, "scaleout")
        load_sample_catalog()
        credential, secret = create_credential("Provider", ["all"])
        env = env_for(state.uri, "scaleout", tmp_path / "data", MASTERYHUB_WORKER="off")
        apps = [Serve(env, tmp_path / f"app-{i}.log") for i in range(2)]
        workers = [Process(["worker", "--poll", "0.05"], env, tmp_path / f"worker-{i}.log")
                   for i in range(2)]
        urls = [app.url for app in apps]

        quizzes = [quiz(f"learner{n % LEARNERS}@school.example", LEAVES[rng.randrange(13)],
                        round(rng.uniform(0.3, 1.0), 2), n, rng) for n in range(QUIZZES)]
        voids = [void(target["id"], rng) for target in rng.sample(quizzes, VOIDS)]
        batches = [quizzes[i:i + BATCH] for i in range(0, QUIZZES, BATCH)]
        batches += [voids[i:i + 10] for i in range(0, VOIDS, 10)]
        n_quiz_batches = QUIZZES // BATCH
        streamer = Streamer(batches, basic_auth(credential.key, secret), threads=4)

        def post(indices) -> None:
            for thread in streamer.run(urls, indices):
                thread.join(60)
            assert streamer.failures == []

        post(range(n_quiz_batches // 2))
        # Kill the worker holding the lease while it works through the first half.
        deadline = time.monotonic() + 30
        while (db["worker_state"].find_one({"_id": WORKER_ID}) or {}).get("position", 0) == 0:
            assert time.monotonic() < deadline, workers[0].log() + workers[1].log()
            time.sleep(0.02)
        holder = db["worker_state"].find_one({"_id": WORKER_ID})["holder"]
        killed = next(w for w in workers if f":{w.pid}:" in holder)
        killed.kill()
        post(range(n_quiz_batches // 2, n_quiz_batches))
        killed.start()  # back as the stand-by (the other takes over when the lease expires)
        post(range(n_quiz_batches, len(batches)))  # the voids, after their targets
        wait_caught_up(db, timeout=90)
        taken_over = db["worker_state"].find_one({"_id": WORKER_ID})["holder"]
        assert taken_over != holder

        assert streamer.acked == set(range(len(batches)))
        posted = {s["id"] for batch in batches for s in batch}
        assert db["lrs_statements"].count_documents({}) == len(posted) == QUIZZES + VOIDS
        twice = list(db["lrs_statements"].aggregate([
            {"$group": {"_id": "$sid", "n": {"$sum": 1}}}, {"$match": {"n": {"$gt": 1}}}]))
        assert twice == []
        assert {d["sid"] for d in db["lrs_statements"].find({}, {"sid": 1})} == posted
        assert db["lrs_statements"].count_documents({"v": True}) == VOIDS

        for worker in workers:
            worker.stop()  # releases the lease, which recompute takes
        concurrent = snapshot(db)
        # Every statement not voided is evidence; a voided one is evidence marked voided,
        # or none at all when its voiding statement was stored before the mapper got to it.
        targets = {v["object"]["id"] for v in voids}
        mapped = {e["statement"]: e for e in evidence.all_records(db)}
        assert {q["id"] for q in quizzes} - targets <= set(mapped)
        assert all(mapped[sid]["voided"] for sid in targets & set(mapped))
        assert not any(e["voided"] for sid, e in mapped.items() if sid not in targets)
        assert any(m[2] for m in concurrent["mastery"].values())
        assert len({k.split("|")[0] for k in concurrent["credits"]}) == LEARNERS
        recompute(db)
        assert snapshot(db) == concurrent
    finally:
        for process in (*workers, *apps):
            process.stop()
        server.stop()
