"""Statements in, credit out: the worker, voiding, review, identity and recompute, end to end."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import tincan
from worker_drain import drain

from mappings import catalog as catalog_module
from mappings import evidence as evidence_store
from mappings import records
from mappings.frameworks import sample_framework, save_framework
from mappings.models import RuleSet
from mappings.rules import load_ruleset
from mappings.worker import WORKER_ID, Worker, recompute

RULES = Path(__file__).resolve().parents[2] / "mappings" / "data" / "sample_rules.yaml"
LEAVES = ["ALG.1.1", "ALG.1.2", "ALG.1.3", "ALG.1.4", "ALG.2.1", "ALG.2.2", "ALG.2.3",
          "ALG.3.1", "ALG.3.2", "ALG.4.1", "ALG.4.2", "ALG.4.3", "ALG.4.4"]
CREDIT = "algebra-1-cbe-credit"
PASSED = "http://adlnet.gov/expapi/verbs/passed"


@pytest.fixture
def catalog(app):
    save_framework(sample_framework())
    text = RULES.read_text()
    ruleset = load_ruleset(text, filename="sample_rules.yaml",
                           competencies=catalog_module.load().infos)
    RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
    catalog_module.bump()
    return catalog_module.load()


def quiz(email: str, code: str, scaled: float, *, n: int = 0, when: str | None = None) -> dict:
    stmt = {
        "id": str(uuid.uuid4()),
        "actor": {"objectType": "Agent", "name": email.split("@")[0],
                  "mbox": f"mailto:{email}"},
        "verb": {"id": PASSED, "display": {"en-US": "passed"}},
        "object": {"id": f"https://courses.example.com/algebra-1/{code}/quiz-{n}",
                   "definition": {"name": {"en-US": f"{code} quiz {n}"}}},
        "result": {"score": {"scaled": scaled}, "success": scaled >= 0.8},
    }
    if when:
        stmt["timestamp"] = when
    return stmt


def internship_task(email: str, task: str) -> dict:
    """An internship platform's attestation: the sample rules send it to review."""
    return {
        "actor": {"mbox": f"mailto:{email}"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
        "object": {"id": f"https://internships.example.org/tasks/{task}",
                   "definition": {"type": "https://w3id.org/xapi/masteryhub/activities/"
                                          "internship-task"}},
    }


def basic_auth(key: str, secret: str) -> str:
    # Not `from conftest import basic_auth`: once tests/lti/conftest.py is loaded, the
    # name `conftest` is that module, and this file is collected after tests/lti.
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def post(client, headers, statements) -> list[str]:
    response = client.post("/xapi/statements", data=json.dumps(statements),
                           headers=dict(headers, **{"Content-Type": "application/json"}))
    assert response.status_code == 200, response.data
    return response.get_json()


def learner_of(db, email: str) -> str:
    return db["learners"].find_one({"agents": f"mbox|mailto:{email}"})["_id"]


def all_records(db) -> dict[str, records.LearnerRecords]:
    """Every learner's mastery and credit records, read through ``mappings.records``."""
    return records.load(db, db["progress"].distinct("learner"))


def all_mastery(db) -> list[dict]:
    return [m for held in all_records(db).values() for m in held.mastery.values()]


def mastery_of(db, learner: str, competency: str) -> dict | None:
    return records.mastery_one(db, learner, competency)


def credit_of(db, learner: str, rule: str = CREDIT) -> dict | None:
    return records.credit_one(db, learner, rule)


def has_records(db, learner: str) -> bool:
    """Whether anything (mastery or credit) is stored for the learner."""
    return db["progress"].count_documents({"learner": learner}) > 0


def snapshot(db) -> dict:
    """The derived state that must not depend on how it was computed."""
    held = all_records(db).values()
    mastery = {d["_id"]: (d.get("points"), d.get("level"), d.get("mastered"),
                          sorted(d.get("evidence", [])))
               for h in held for d in h.mastery.values()}
    credits = {d["_id"]: (d["status"], sorted(d["mastered"]), d["percent"], d.get("awarded_at"))
               for h in held for d in h.credits.values()}
    evidence = {d["_id"]: (d["points"], d["status"], d.get("voided")) for d in
                evidence_store.all_records(db)}
    return {"mastery": mastery, "credits": credits, "evidence": evidence}


def test_credit_awarded_at_70_percent_traceable_and_revoked_by_voiding(
        client, xapi_headers, db, catalog):
    email = "ana@school.example.edu"
    ids = post(client, xapi_headers,
               [quiz(email, code, 0.9, when=f"2026-09-{i + 1:02d}T10:00:00Z")
                for i, code in enumerate(LEAVES[:9])])
    drain(db)
    learner = learner_of(db, email)
    credit = credit_of(db, learner)
    assert credit["status"] == "in_progress"
    assert len(credit["mastered"]) == 9 and credit["percent"] == pytest.approx(9 / 13 * 100)

    (tenth,) = post(client, xapi_headers,
                    [quiz(email, LEAVES[9], 0.95, when="2026-10-01T10:00:00Z")])
    drain(db)
    credit = credit_of(db, learner)
    assert credit["status"] == "awarded"
    assert credit["awarded_at"].isoformat().startswith("2026-10-01T10:00:00")
    behind = {evidence_store.get(db, e)["statement"] for e in credit["evidence"]}
    assert behind == set(ids) | {tenth}

    void = {"actor": {"mbox": "mailto:teacher@school.example.edu"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
            "object": {"objectType": "StatementRef", "id": tenth}}
    post(client, xapi_headers, [void])
    drain(db)
    credit = credit_of(db, learner)
    assert credit["status"] == "revoked" and credit["revoked_at"] is not None
    audit = db["audit"].find_one({"subject": f"{learner}|{CREDIT}", "action": "credit_revoked"})
    assert LEAVES[9] not in [c for c in credit["mastered"]]
    assert audit is not None and audit["detail"]["percent"] == pytest.approx(9 / 13 * 100)
    mastery = mastery_of(db, learner, "alg1-4-1")
    assert mastery["mastered"] is False and mastery["points"] is None


def test_levels_follow_the_calculation_method_and_roll_up(client, xapi_headers, db, catalog):
    email = "ben@school.example.edu"
    # decaying_average(0.65) on the performance-level scale (1..10, mastery_at 0.8 -> 7)
    post(client, xapi_headers, [quiz(email, "ALG.2.1", 0.4, n=1, when="2026-09-01T10:00:00Z"),
                                quiz(email, "ALG.2.1", 1.0, n=2, when="2026-09-02T10:00:00Z")])
    drain(db)
    learner = learner_of(db, email)
    m = mastery_of(db, learner, "alg1-2-1")
    first = 1 + (0.4 / 0.8) * 6  # 0.4 of the way to the pass mark: 4.0 points
    expected = (1 - 0.65) * first + 0.65 * 10
    assert m["points"] == pytest.approx(expected)
    assert m["mastered"] is True and m["method"] == "decaying_average(0.65)"
    # ALG.2 rolls up "all children": one of three mastered is not enough.
    parent = mastery_of(db, learner, "alg1-2")
    assert parent["from_children"] is True and parent["mastered"] is False
    post(client, xapi_headers, [quiz(email, "ALG.2.2", 0.9), quiz(email, "ALG.2.3", 0.85)])
    drain(db)
    parent = mastery_of(db, learner, "alg1-2")
    assert parent["mastered"] is True


def test_new_evidence_that_keeps_the_level_still_restamps_the_record(
        client, xapi_headers, db, catalog):
    """A cell's stamp is never older than its newest evidence (the class view finds a
    learner's newest evidence by it), even when that evidence leaves the level as it was."""
    email = "cleo@school.example.edu"
    post(client, xapi_headers, [quiz(email, "ALG.2.1", 0.9, n=1)])
    drain(db)
    learner = learner_of(db, email)
    before = mastery_of(db, learner, "alg1-2-1")
    time.sleep(0.01)
    post(client, xapi_headers, [quiz(email, "ALG.2.1", 0.9, n=2)])
    drain(db)
    after = mastery_of(db, learner, "alg1-2-1")
    assert (after["points"], after["level"]) == (before["points"], before["level"])
    assert len(after["evidence"]) == 2 and after["updated_at"] > before["updated_at"]
    newest = max(e["timestamp"] for e in evidence_store.of_learners(db, [learner]))
    stamped = db["progress"].find_one({"learner": learner})["updated_at"]
    assert after["updated_at"] == stamped and stamped >= newest.replace(microsecond=0)


def test_review_queue_approve_reject_override(client, xapi_headers, db, catalog, app):
    from mappings.review import decide

    email = "cam@school.example.edu"
    post(client, xapi_headers, [internship_task(email, "budget-model")])
    drain(db)
    learner = learner_of(db, email)
    pending = [e for e in evidence_store.of_learners(db, [learner])
               if e["status"] == "pending"]
    assert {e["competency"] for e in pending} == {"alg1-3-1", "alg1-3-2"}
    assert mastery_of(db, learner, "alg1-3-1")["points"] is None

    by_comp = {e["competency"]: e["_id"] for e in pending}
    decide(db, by_comp["alg1-3-1"], "approve", by="Ms Rivera", comment="Seen on site")
    decide(db, by_comp["alg1-3-2"], "reject", by="Ms Rivera", comment="Not modelling")
    assert mastery_of(db, learner, "alg1-3-1")["mastered"] is True
    assert mastery_of(db, learner, "alg1-3-2")["points"] is None

    decide(db, by_comp["alg1-3-1"], "override", by="Ms Rivera", comment="Partial", points=5)
    m = mastery_of(db, learner, "alg1-3-1")
    assert m["points"] == 5 and m["mastered"] is False
    actions = evidence_store.get(db, by_comp["alg1-3-1"])["actions"]
    assert [a["action"] for a in actions] == ["approve", "override"]
    assert actions[0]["by"] == "Ms Rivera" and actions[0]["at"] is not None
    assert db["audit"].count_documents({"subject": by_comp["alg1-3-1"]}) == 2

    # Re-processing the statement keeps the teacher's decisions.
    db["worker_state"].update_one({"_id": WORKER_ID}, {"$set": {"position": 0}})
    drain(db)
    assert evidence_store.get(db, by_comp["alg1-3-2"])["status"] == "rejected"
    assert mastery_of(db, learner, "alg1-3-1")["points"] == 5


def test_reprocessing_and_recompute_change_nothing(client, xapi_headers, db, catalog):
    statements = [quiz(f"s{i % 7}@school.example.edu", LEAVES[i % 13], (i % 10) / 10,
                       n=i, when=f"2026-09-{1 + i % 28:02d}T{i % 24:02d}:00:00Z")
                  for i in range(150)]
    post(client, xapi_headers, statements)
    drain(db)
    once = snapshot(db)
    assert once["mastery"] and once["credits"]
    db["worker_state"].update_one({"_id": WORKER_ID}, {"$set": {"position": 0}})
    drain(db)
    assert snapshot(db) == once
    written = {d["_id"]: d["updated_at"] for d in all_mastery(db)}
    credited = {d["_id"]: d["updated_at"] for h in all_records(db).values()
                for d in h.credits.values()}
    stored = {d["_id"]: d["updated_at"] for d in db["progress"].find()}
    recompute(db)
    assert snapshot(db) == once
    # Records that did not change keep their change times, and progress documents whose
    # records did not change are not rewritten (followers read by updated_at).
    assert {d["_id"]: d["updated_at"] for d in all_mastery(db)} == written
    assert {d["_id"]: d["updated_at"] for h in all_records(db).values()
            for d in h.credits.values()} == credited
    assert {d["_id"]: d["updated_at"] for d in db["progress"].find()} == stored


def test_group_statement_is_evidence_for_each_member_and_aliases_merge(
        client, xapi_headers, db, catalog):
    from mappings.identity import link, move_evidence

    team = {"objectType": "Group", "name": "Team 4",
            "member": [{"mbox": "mailto:dee@school.example.edu"},
                       {"mbox": "mailto:eli@school.example.edu"}]}
    stmt = quiz("x@school.example.edu", "ALG.1.1", 0.9)
    stmt["actor"] = team
    post(client, xapi_headers, [stmt])
    # The course knows Dee by an account; her evidence must meet the email's.
    by_account = quiz("x@school.example.edu", "ALG.1.2", 0.9)
    by_account["actor"] = {"account": {"homePage": "https://courses.example.com",
                                       "name": "dee-42"}}
    post(client, xapi_headers, [by_account])
    drain(db)
    dee = learner_of(db, "dee@school.example.edu")
    eli = learner_of(db, "eli@school.example.edu")
    assert mastery_of(db, dee, "alg1-1-1")["mastered"]
    assert mastery_of(db, eli, "alg1-1-1")["mastered"]
    assert mastery_of(db, dee, "alg1-1-2") is None

    _, merged = link(dee, "acct|https://courses.example.com|dee-42")
    assert merged is not None
    move_evidence(db, merged, dee)
    assert mastery_of(db, dee, "alg1-1-2")["mastered"]
    assert not has_records(db, merged)
    # Later statements under the account now go to Dee directly.
    later = quiz("x@school.example.edu", "ALG.1.3", 0.9)
    later["actor"] = by_account["actor"]
    post(client, xapi_headers, [later])
    drain(db)
    assert mastery_of(db, dee, "alg1-1-3")["mastered"]


def test_tincan_provider_to_api(live_server, xapi_credential, db, catalog):
    lrs = tincan.RemoteLRS(endpoint=live_server + "/xapi/", username=xapi_credential[0],
                           password=xapi_credential[1], version="1.0.3")
    email = "fay@school.example.edu"
    for code in LEAVES[:10]:
        statement = tincan.Statement(
            actor=tincan.Agent(name="Fay", mbox=f"mailto:{email}"),
            verb=tincan.Verb(id=PASSED),
            object=tincan.Activity(id=f"https://courses.example.com/algebra-1/{code}/final"),
            result=tincan.Result(score=tincan.Score(scaled=0.92), success=True))
        assert lrs.save_statement(statement).success
    drain(db)
    import requests

    learner = learner_of(db, email)
    auth = {"Authorization": basic_auth(*xapi_credential)}
    body = requests.get(f"{live_server}/api/learners/{learner}", headers=auth, timeout=10).json()
    assert [c["status"] for c in body["credits"]] == ["awarded"]
    chain = requests.get(f"{live_server}/api/learners/{learner}/competencies/alg1-1-1",
                         headers=auth, timeout=10).json()
    assert chain["mastery"]["mastered"] is True
    assert chain["evidence"][0]["counted"] is True
    assert chain["credits"][0]["status"] == "awarded"
    assert requests.get(f"{live_server}/api/learners/{learner}", timeout=10).status_code == 401


def test_api_review_requires_the_all_scope(client, xapi_headers, db, catalog):
    from lrs.auth import create_credential

    reader, secret = create_credential("Dashboard", ["all/read"])
    headers = {"Authorization": basic_auth(reader.key, secret)}
    assert client.get("/api/evidence", headers=headers).status_code == 200
    denied = client.post("/api/evidence/x/review", json={"action": "approve", "by": "me"},
                         headers=headers)
    assert denied.status_code == 403
    missing = client.post("/api/evidence/nope/review", json={"action": "approve", "by": "me"},
                          headers={"Authorization": xapi_headers["Authorization"]})
    assert missing.status_code == 404
    bad = client.post("/api/evidence/nope/review", json={"action": "shout"},
                      headers={"Authorization": xapi_headers["Authorization"]})
    assert bad.status_code in (400, 404)
    assert client.get("/api/evidence?status=weird", headers=headers).status_code == 400


def test_two_concurrent_workers_equal_one(client, xapi_headers, db, catalog):
    statements = [quiz(f"t{i % 11}@school.example.edu", LEAVES[i % 13], (i % 10) / 10, n=i,
                       when=f"2026-10-{1 + i % 28:02d}T{i % 24:02d}:00:00Z")
                  for i in range(300)]
    stop = threading.Event()
    workers = [Worker(db, name=f"w{i}", batch=40) for i in range(2)]
    threads = [threading.Thread(target=w.run_forever, args=(stop,), kwargs={"poll": 0.01})
               for w in workers]
    for t in threads:
        t.start()
    try:
        for i in range(0, 300, 30):
            post(client, xapi_headers, statements[i:i + 30])
        drain_wait(db)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    concurrent = snapshot(db)
    recompute(db)
    assert snapshot(db) == concurrent


def drain_wait(db, timeout: float = 60) -> None:
    from lrs.store import StatementStore

    store = StatementStore(db)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = db["worker_state"].find_one({"_id": WORKER_ID}) or {}
        if state.get("position", 0) >= store.last_seq() > 0:
            return
        time.sleep(0.05)
    raise AssertionError("workers did not catch up")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_worker_killed_mid_stream_ends_equal_to_recompute(
        client, xapi_headers, db, catalog, settings, mongo_server_uri, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERYHUB_")}
    env.update(MASTERYHUB_MONGODB_URI=mongo_server_uri, MASTERYHUB_DB_NAME=db.name,
               MASTERYHUB_DATA_DIR=str(tmp_path / "w"))

    def start():
        return subprocess.Popen([sys.executable, "-m", "masteryhub.cli", "worker",
                                 "--poll", "0.01"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    statements = [quiz(f"k{i % 13}@school.example.edu", LEAVES[i % 13], (i % 10) / 10, n=i,
                       when=f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00Z")
                  for i in range(1200)]
    worker = start()
    try:
        for i in range(0, 600, 50):
            post(client, xapi_headers, statements[i:i + 50])
        # Kill it while it works (some of the stream processed, not all).
        deadline = time.monotonic() + 30
        while (db["worker_state"].find_one({"_id": WORKER_ID}) or {}).get("position", 0) == 0:
            assert time.monotonic() < deadline, worker.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        for i in range(600, 1200, 50):
            post(client, xapi_headers, statements[i:i + 50])
        worker = start()  # takes over once the dead worker's lease expires
        drain_wait(db, timeout=120)
    finally:
        worker.kill()
        worker.wait(10)
    incremental = snapshot(db)
    assert len(incremental["evidence"]) == 1200
    recompute(db)
    assert snapshot(db) == incremental


def test_a_statement_that_cannot_be_mapped_does_not_stop_the_stream(
        client, xapi_headers, db, catalog):
    email = "gus@school.example.edu"
    early = quiz(email, "ALG.1.1", 0.9, when="0001-01-01T00:00:00+05:00")  # before year 1 UTC
    post(client, xapi_headers, [early, quiz(email, "ALG.1.2", 0.9)])
    drain(db)
    learner = learner_of(db, email)
    assert mastery_of(db, learner, "alg1-1-2")["mastered"]
    # The odd timestamp falls back to `stored`; the evidence still counts.
    assert mastery_of(db, learner, "alg1-1-1")["mastered"]


def test_a_worker_that_lost_its_lease_writes_no_mastery(client, xapi_headers, db, catalog):
    from mappings.worker import LeaseLost

    post(client, xapi_headers, [quiz("hal@school.example.edu", "ALG.1.1", 0.9)])
    stalled = Worker(db, name="stalled")
    stalled._ensure_state()
    assert stalled._acquire() is not None
    # It stalls past its lease and another worker takes over.
    db["worker_state"].update_one({"_id": WORKER_ID},
                                  {"$set": {"holder": "other", "lease_until": utcnow_plus(60)}})
    docs = list(db["lrs_statements"].find())
    with pytest.raises(LeaseLost):
        stalled.engine().process(docs)
    assert db["progress"].count_documents({}) == 0 and all_mastery(db) == []


def utcnow_plus(seconds: float):
    import datetime as dt

    from mappings.models import utcnow

    return utcnow() + dt.timedelta(seconds=seconds)


def test_decisions_go_through_the_lease_holder(client, xapi_headers, db, catalog):
    from mappings.review import decide

    post(client, xapi_headers, [internship_task("ivy@school.example.edu", "survey")])
    drain(db)
    learner = learner_of(db, "ivy@school.example.edu")
    (evidence_id,) = [e["_id"] for e in evidence_store.of_learners(db, [learner], ["alg1-3-1"])]
    running = Worker(db, name="running")  # a live worker holds the lease
    running.run_once()
    decide(db, evidence_id, "approve", by="Mr Okafor")
    assert mastery_of(db, learner, "alg1-3-1")["points"] is None
    running.run_once()  # its next poll applies the decision
    assert mastery_of(db, learner, "alg1-3-1")["mastered"] is True
    running.release()


def test_a_running_worker_follows_a_merge(client, xapi_headers, db, catalog):
    from mappings.identity import link, move_evidence

    account = {"account": {"homePage": "https://courses.example.com", "name": "jo-7"}}
    first = quiz("x@school.example.edu", "ALG.1.1", 0.9)
    first["actor"] = account
    post(client, xapi_headers, [first, quiz("jo@school.example.edu", "ALG.1.2", 0.9)])
    from lrs.store import StatementStore

    store = StatementStore(db)
    while store.watermark().seq < store.last_seq():
        time.sleep(0.01)
    worker = Worker(db, name="long-lived")
    worker.run_once()  # caches the account's (soon merged) learner
    jo = learner_of(db, "jo@school.example.edu")
    worker.release()
    _, merged = link(jo, "acct|https://courses.example.com|jo-7")
    move_evidence(db, merged, jo)
    later = quiz("x@school.example.edu", "ALG.1.3", 0.9)
    later["actor"] = account
    post(client, xapi_headers, [later])
    while store.watermark().seq < store.last_seq():
        time.sleep(0.01)
    worker.run_once()
    assert mastery_of(db, jo, "alg1-1-3")["mastered"]
    assert not has_records(db, merged)
    assert db["learners"].find_one({"_id": merged}) is None


def test_api_guards_review_and_listing(client, xapi_headers, db, catalog):
    auth = {"Authorization": xapi_headers["Authorization"]}
    assert client.get("/api/evidence?status=accepted", headers=auth).status_code == 400
    # Evidence is stored by learner: a framework alone would read the whole collection.
    by_framework = client.get("/api/evidence?status=accepted&framework=algebra-1-sample",
                              headers=auth)
    assert by_framework.status_code == 400 and "learner" in by_framework.get_json()["error"][
        "message"]
    (target,) = post(client, xapi_headers, [quiz("kim@school.example.edu", "ALG.1.1", 0.9)])
    drain(db)
    (evidence_id,) = [e["_id"] for e in evidence_store.all_records(db)
                      if e["statement"] == target]
    post(client, xapi_headers, [{"actor": {"mbox": "mailto:t@school.example.edu"},
                                 "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
                                 "object": {"objectType": "StatementRef", "id": target}}])
    drain(db)
    voided = client.post(f"/api/evidence/{evidence_id}/review",
                         json={"action": "approve", "by": "Ms Lee"}, headers=auth)
    assert voided.status_code == 400 and "voided" in voided.get_json()["error"]["message"]
    status = client.get("/api/worker", headers=auth).get_json()
    assert status["lag"] == 0 and status["errors"] == []


def drain_in_batches(db, batch: int) -> None:
    """Like drain, with a worker of the given batch size."""
    from lrs.store import StatementStore

    store = StatementStore(db)
    while store.watermark().seq < store.last_seq():
        time.sleep(0.01)
    worker = Worker(db, name=f"batch-{batch}", batch=batch)
    try:
        while (db["worker_state"].find_one({"_id": WORKER_ID}) or {}).get("position", 0) \
                < store.watermark().seq:
            worker.run_once()
    finally:
        worker.release()


@pytest.mark.parametrize("batch", [1, 3, 500])
def test_awarded_at_does_not_depend_on_batches_or_arrival_order(
        client, xapi_headers, db, catalog, batch):
    """The credit is dated by the evidence that completed it in timestamp order: 9
    competencies in September, a 10th on 1 October, and an 11th, arriving last, dated
    15 September -- which completed the set first."""
    email = "lea@school.example.edu"
    statements = [quiz(email, code, 0.9, when=f"2026-09-{i + 1:02d}T10:00:00Z")
                  for i, code in enumerate(LEAVES[:9])]
    statements += [quiz(email, LEAVES[9], 0.9, when="2026-10-01T10:00:00Z"),
                   quiz(email, LEAVES[10], 0.9, when="2026-09-15T10:00:00Z")]
    post(client, xapi_headers, statements)
    drain_in_batches(db, batch)
    learner = learner_of(db, email)
    credit = credit_of(db, learner)
    assert credit["status"] == "awarded"
    assert credit["awarded_at"].isoformat().startswith("2026-09-15T10:00:00")
    incremental = snapshot(db)
    recompute(db)
    assert snapshot(db) == incremental


def test_a_retried_batch_does_not_duplicate_credit_audit_records(
        client, xapi_headers, db, catalog):
    email = "max@school.example.edu"
    post(client, xapi_headers, [quiz(email, code, 0.9, when=f"2026-09-{i + 1:02d}T10:00:00Z")
                                for i, code in enumerate(LEAVES[:9])])
    drain(db)
    learner = learner_of(db, email)
    before = credit_of(db, learner)
    assert before["status"] == "in_progress"
    stored = list(db["progress"].find({"learner": learner}))
    position = db["worker_state"].find_one({"_id": WORKER_ID})["position"]
    post(client, xapi_headers, [quiz(email, LEAVES[9], 0.9, when="2026-10-01T10:00:00Z")])
    drain(db)
    assert credit_of(db, learner)["status"] == "awarded"
    # The worker died after writing the audit record, before the learner's progress (with
    # the credit) and its position: the batch runs again and finds the credit as it was.
    for doc in stored:
        db["progress"].replace_one({"_id": doc["_id"]}, doc)
    assert credit_of(db, learner) == before
    db["worker_state"].update_one({"_id": WORKER_ID}, {"$set": {"position": position}})
    drain(db)
    assert credit_of(db, learner)["status"] == "awarded"
    subject = f"{learner}|{CREDIT}"
    assert db["audit"].count_documents({"subject": subject, "action": "credit_awarded"}) == 1


# -- catalog changes, superseded evidence, merges, interrupted recompute --------------------
SAMPLE_FRAMEWORK = RULES.parent / "sample_framework.yaml"


def settle(db, worker: Worker | None = None, *, limit: int = 500) -> None:
    """Run a worker until the stream, the dirty queue and any catalog job are all done."""
    from lrs.store import StatementStore

    store = StatementStore(db)
    while store.watermark().seq < store.last_seq():
        time.sleep(0.01)
    worker = worker or Worker(db, name="settle")
    try:
        for _ in range(limit):
            worker.run_once()
            position = db["worker_state"].find_one({"_id": WORKER_ID})["position"]
            if position >= store.watermark().seq and worker.pending_job() is None and \
                    db["mapping_dirty"].count_documents({}) == 0:
                return
        raise AssertionError("worker did not settle")
    finally:
        worker.release()


def reimport_framework(replacements: dict[str, str]) -> None:
    """Import the sample framework again with its YAML text edited."""
    from mappings.frameworks import parse_yaml_framework

    text = SAMPLE_FRAMEWORK.read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    save_framework(parse_yaml_framework(text, filename="sample_framework.yaml"))


def load_rules(text: str) -> None:
    ruleset = load_ruleset(text, filename="sample_rules.yaml",
                           competencies=catalog_module.load().infos)
    RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
    catalog_module.bump()


def by_learner(snap: dict) -> dict[str, dict]:
    """A snapshot's mastery and credits grouped per learner."""
    out: dict[str, dict] = {}
    for kind in ("mastery", "credits"):
        for key, value in snap[kind].items():
            out.setdefault(key.split("|")[0], {"mastery": {}, "credits": {}})[kind][key] = value
    return out


def spread(prefix: str, learners: int, per_learner: int, *, month: str = "09") -> list[dict]:
    """Each learner passes `per_learner` different competencies (well above the mark)."""
    return [quiz(f"{prefix}{i}@school.example.edu", LEAVES[(i + k) % 13], 0.95, n=k,
                 when=f"2026-{month}-{1 + (i + k) % 28:02d}T{k % 24:02d}:00:00Z")
            for i in range(learners) for k in range(per_learner)]


def test_a_catalog_change_is_applied_by_the_worker_and_equals_a_recompute(
        client, xapi_headers, db, catalog, monkeypatch):
    """Credit rule threshold and a roll-up method change after evidence exists: the worker
    notices the new catalog and rebuilds in the background, in resumable chunks."""
    import mappings.worker as worker_module

    post(client, xapi_headers, spread("cc", 7, 6))
    settle(db)
    before = snapshot(db)
    assert all(c[0] == "in_progress" for c in before["credits"].values())
    parents = [k for k, v in before["mastery"].items() if k.endswith("|alg1-2")]
    assert parents

    reimport_framework({"min_percent: 70": "min_percent: 40",
                        "rollup: {method: all_children}": "rollup: {method: average}"})
    # A first worker works part of the job through, then dies (its lease runs out).
    monkeypatch.setattr(worker_module, "REBUILD_CHUNK", 2)
    dying = Worker(db, name="dying")
    dying._acquire()
    dying.engine()
    assert dying.pending_job() is not None
    assert dying.job_step() == ("learners", 2)
    job = db["mapping_jobs"].find_one({"_id": "catalog"})
    assert job["rebuild"]["after"]  # progress persisted
    db["worker_state"].update_one({"_id": WORKER_ID}, {"$set": {"lease_until": utcnow_plus(-1)}})
    settle(db)  # another worker takes over and resumes
    incremental = snapshot(db)
    credits = incremental["credits"].values()
    assert all(c[0] == "awarded" for c in credits) and len(credits) == 7
    for key in parents:
        assert mastery_of(db, *key.split("|"))["method"] == "rollup:average"
    recompute(db)
    assert snapshot(db) == incremental
    # A bump that changes nothing derived (a learner merge does that) starts no job.
    catalog_module.bump()
    worker = Worker(db, name="idle")
    worker._acquire()
    worker.engine()
    assert worker.pending_job() is None
    worker.release()


WRONG = {'activity: {prefix: "https://courses.example.com/algebra-1/ALG.1.1/"}\n'
         '    evidence:\n      - competency: ALG.1.1':
         'activity: {prefix: "https://courses.example.com/algebra-1/ALG.1.1/"}\n'
         '    evidence:\n      - competency: ALG.1.3'}


def test_a_corrected_rule_supersedes_the_evidence_it_no_longer_produces(
        client, xapi_headers, db, catalog):
    from mappings.review import decide, explain

    correct = RULES.read_text()
    wrong = correct
    for old, new in WRONG.items():
        assert old in wrong
        wrong = wrong.replace(old, new)
    load_rules(wrong)  # the rule for ALG.1.1's quizzes sends them to ALG.1.3 by mistake
    email = "sam@school.example.edu"
    post(client, xapi_headers, [quiz(email, "ALG.1.1", 0.9, n=i,
                                     when=f"2026-09-0{i + 1}T10:00:00Z") for i in range(3)]
         + spread("sx", 4, 5) + [internship_task(email, "budget")])
    settle(db)
    learner = learner_of(db, email)
    wrong_ids = [e["_id"] for e in evidence_store.of_learners(db, [learner], ["alg1-1-3"])]
    assert len(wrong_ids) == 3
    assert mastery_of(db, learner, "alg1-1-3")["mastered"]
    # A teacher's decisions: on evidence the fix keeps, and on evidence it drops.
    (kept,) = [e["_id"] for e in evidence_store.of_learners(db, [learner], ["alg1-3-1"])]
    decide(db, kept, "approve", by="Ms Rivera")
    decide(db, wrong_ids[0], "override", by="Ms Rivera", points=9)

    load_rules(correct)
    settle(db)  # the worker applies the corrected rules on its own
    incremental = snapshot(db)
    recompute(db)
    assert snapshot(db) == incremental

    old = evidence_store.get(db, wrong_ids[0])
    assert old["status"] == "superseded" and old["superseded_status"] == "accepted"
    assert [a["action"] for a in old["actions"]] == ["override"]  # kept, for the record
    assert {e["status"] for e in evidence_store.by_ids(db, wrong_ids)} == {"superseded"}
    new = evidence_store.of_learners(db, [learner], ["alg1-1-1"])
    assert len(new) == 3 and {e["status"] for e in new} == {"accepted"}
    assert mastery_of(db, learner, "alg1-1-1")["mastered"]
    assert mastery_of(db, learner, "alg1-1-3") is None
    approved = evidence_store.get(db, kept)
    assert approved["status"] == "accepted" and approved["actions"][0]["by"] == "Ms Rivera"
    chain = explain(db, learner, "alg1-1-3")
    assert chain["evidence"] and all(e["superseded"] and not e["counted"]
                                     for e in chain["evidence"])
    with pytest.raises(ValueError, match="superseded"):
        decide(db, wrong_ids[1], "approve", by="Ms Rivera")

    # Equal to a fresh database's (no teacher decisions there: compare the other learners).
    ours = {k: v for k, v in snapshot(db)["mastery"].items() if not k.startswith(learner)}
    live = {k: v for k, v in snapshot(db)["evidence"].items() if v[1] != "superseded"}
    for name in (evidence_store.COLLECTION, "progress", "mapping_jobs", "audit"):
        db[name].delete_many({})
    db["worker_state"].update_one({"_id": WORKER_ID}, {"$set": {"position": 0}})
    settle(db)
    fresh = snapshot(db)
    assert {k: v for k, v in fresh["mastery"].items() if not k.startswith(learner)} == ours
    assert {k for k in fresh["mastery"] if k.startswith(learner)} == \
        {k for k in snapshot(db)["mastery"] if k.startswith(learner)}
    assert set(fresh["evidence"]) == set(live)


def test_merging_two_members_of_one_group_statement_keeps_both_copies_decisions(
        client, xapi_headers, db, catalog):
    from mappings.identity import link, move_evidence
    from mappings.review import decide

    account = {"account": {"homePage": "https://courses.example.com", "name": "dee-9"}}
    task = internship_task("x@school.example.edu", "team-budget")
    task["actor"] = {"objectType": "Group", "name": "Team 9",
                     "member": [{"mbox": "mailto:dee9@school.example.edu"}, account]}
    post(client, xapi_headers, [task])
    settle(db)
    dee = learner_of(db, "dee9@school.example.edu")
    alias = db["learners"].find_one({"agents": "acct|https://courses.example.com|dee-9"})["_id"]
    copies = {(e["learner"], e["competency"]): e["_id"]
              for e in evidence_store.all_records(db)}
    assert len(copies) == 4  # two competencies, a copy for each member
    decide(db, copies[(dee, "alg1-3-1")], "approve", by="Ms Rivera", comment="on site")
    decide(db, copies[(alias, "alg1-3-1")], "override", by="Mr Okafor", points=5)
    decide(db, copies[(alias, "alg1-3-2")], "reject", by="Mr Okafor")

    _, merged = link(dee, "acct|https://courses.example.com|dee-9")
    assert merged == alias
    assert move_evidence(db, alias, dee) == 2
    left = list(evidence_store.all_records(db))
    kept = {e["competency"]: e for e in left}
    assert len(left) == 2
    first = kept["alg1-3-1"]
    assert [(a["action"], a["by"]) for a in first["actions"]] == \
        [("approve", "Ms Rivera"), ("override", "Mr Okafor")]
    assert first["status"] == "accepted" and first["learner"] == dee
    assert kept["alg1-3-2"]["status"] == "rejected"
    assert [a["action"] for a in kept["alg1-3-2"]["actions"]] == ["reject"]
    assert mastery_of(db, dee, "alg1-3-1")["points"] == 5
    assert not has_records(db, alias)
    # Running the merge again (as after an interruption) changes nothing.
    again = snapshot(db)
    move_evidence(db, alias, dee)
    assert snapshot(db) == again
    recompute(db)
    assert snapshot(db) == again


def test_an_interrupted_recompute_leaves_each_learner_old_or_new_and_a_rerun_completes(
        client, xapi_headers, db, catalog, monkeypatch):
    import mappings.worker as worker_module

    post(client, xapi_headers, spread("ir", 7, 5))
    settle(db)
    old = by_learner(snapshot(db))
    # The threshold drops while no worker runs: every learner's credit changes.
    reimport_framework({"min_percent: 70": "min_percent: 30"})
    monkeypatch.setattr(worker_module, "REBUILD_CHUNK", 2)
    monkeypatch.setattr(worker_module, "BATCH", 10)
    calls: list = []

    def interrupt(done, total, what=None):
        calls.append(what)
        # In the rebuild (or, for a recompute without one, at its second batch).
        if what == "learners" or (what is None and len(calls) == 2):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        recompute(db, progress=interrupt)
    middle = by_learner(snapshot(db))
    recompute(db)  # a re-run completes it
    new = by_learner(snapshot(db))
    assert set(old) == set(new) == set(middle)
    assert all(old[lr] != new[lr] for lr in old)
    for lr, held in middle.items():
        assert held in (old[lr], new[lr]), lr
    assert any(middle[lr] == new[lr] for lr in new)  # interrupted midway:
    assert any(middle[lr] == old[lr] for lr in old)  # some rebuilt, some not
    assert db["mapping_jobs"].find_one({"_id": "catalog"})["rebuild"] is None
    recompute(db)
    assert by_learner(snapshot(db)) == new

    # Interrupted again (the old threshold back): this time the running worker finishes it.
    reimport_framework({})
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        recompute(db, progress=interrupt)
    assert Worker(db, name="w").pending_job() is not None
    settle(db)
    finished = snapshot(db)
    assert by_learner(finished) != new
    recompute(db)
    assert snapshot(db) == finished


@pytest.mark.timeout(120)
def test_a_void_racing_its_target_always_voids_it(client, xapi_headers, db, catalog):
    """Two app processes receive a statement and the statement voiding it at the same
    moment, many times over: the target always ends voided, in the LRS and in mastery."""
    from lrs.store import StatementStore

    stores = [StatementStore(db), StatementStore(db)]  # as two processes would
    authority = {"objectType": "Agent", "name": "Provider",
                 "account": {"homePage": "http://localhost", "name": "provider"}}
    teacher = {"mbox": "mailto:teacher@school.example.edu"}
    targets = []
    errors: list[BaseException] = []
    for i in range(60):
        target = quiz(f"race{i % 5}@school.example.edu", LEAVES[i % 13], 0.95, n=i)
        void = {"id": str(uuid.uuid4()), "actor": teacher,
                "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
                "object": {"objectType": "StatementRef", "id": target["id"]}}
        targets.append(target["id"])
        barrier = threading.Barrier(2)

        def send(store, stmt, barrier=barrier):
            try:
                barrier.wait(5)
                store.insert([stmt], authority=authority, credential_key="provider")
            except BaseException as exc:  # reported below
                errors.append(exc)

        # Alternate which one starts first.
        pair = [(stores[0], target), (stores[1], void)][::1 if i % 2 else -1]
        threads = [threading.Thread(target=send, args=p) for p in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert not errors, errors
    for store in stores:
        store.flush()
    not_voided = [d["sid"] for d in db["lrs_statements"].find({"sid": {"$in": targets}})
                  if not d.get("v")]
    assert not_voided == []
    settle(db)
    counted = [e["_id"] for e in evidence_store.all_records(db)
               if e["statement"] in targets and not e.get("voided")]
    assert counted == []
    assert all(m["points"] is None for m in all_mastery(db) if not m["from_children"])



def wait_for_watermark(db) -> None:
    from lrs.store import StatementStore

    store = StatementStore(db)
    while store.watermark().seq < store.last_seq():
        time.sleep(0.01)


def duplicated_records(db) -> dict[str, int]:
    counts = Counter(r["_id"] for r in evidence_store.all_records(db))
    return {k: n for k, n in counts.items() if n > 1}


def test_a_batch_done_again_after_a_merge_stores_no_record_twice(
        client, xapi_headers, db, catalog):
    from mappings.identity import link, move_evidence

    post(client, xapi_headers, [quiz("dee@school.example.edu", "ALG.1.1", 0.9)])
    drain(db)
    dee = learner_of(db, "dee@school.example.edu")
    position = db["worker_state"].find_one({"_id": WORKER_ID})["position"]
    other = quiz("x@school.example.edu", "ALG.1.2", 0.5)
    other["actor"] = {"account": {"homePage": "https://courses.example.com", "name": "dee-42"}}
    post(client, xapi_headers, [other])
    drain(db)
    upper = db["worker_state"].find_one({"_id": WORKER_ID})["position"]
    # The worker died after the batch's writes, before moving its position; meanwhile the
    # account was linked to Dee, which moved its evidence to her.
    db["worker_state"].update_one({"_id": WORKER_ID},
                                  {"$set": {"position": position, "batch_upto": upper}})
    _, merged = link(dee, "acct|https://courses.example.com|dee-42")
    assert merged is not None
    move_evidence(db, merged, dee)
    drain(db)  # the batch again
    assert duplicated_records(db) == {}
    assert {r["competency"] for r in evidence_store.of_learners(db, [dee])} == \
        {"alg1-1-1", "alg1-1-2"}


def test_statements_a_recompute_mapped_ahead_of_the_worker_are_not_stored_twice(
        client, xapi_headers, db, catalog):
    email = "ana@school.example.edu"
    post(client, xapi_headers, [quiz(email, "ALG.1.1", 0.95, n=1, when="2026-09-01T10:00:00Z")])
    drain(db)
    post(client, xapi_headers, [quiz(email, "ALG.1.1", 0.3, n=2, when="2026-09-02T10:00:00Z"),
                                quiz(email, "ALG.1.1", 0.5, n=3, when="2026-09-03T10:00:00Z")])
    wait_for_watermark(db)
    recompute(db)  # maps the new statements before the worker has reached them
    drain(db)
    ana = learner_of(db, email)
    assert duplicated_records(db) == {}
    once = mastery_of(db, ana, "alg1-1-1")
    assert len(once["evidence"]) == 3
    recompute(db)
    assert mastery_of(db, ana, "alg1-1-1")["points"] == once["points"]


def test_a_restored_database_maps_its_statements_again_without_doubling_or_undoing_decisions(
        client, xapi_headers, db, catalog):
    from mappings.review import decide
    from mappings.worker import CHECK_ALL

    email = "ana@school.example.edu"
    post(client, xapi_headers, [quiz(email, "ALG.1.1", 0.95, n=1)])
    drain(db)
    post(client, xapi_headers, [quiz(email, "ALG.1.2", 0.9, n=2)])
    drain(db)  # two batches: mapped again in one, the second's evidence is in another bucket
    ana = learner_of(db, email)
    (copied,) = [r for r in evidence_store.of_learners(db, [ana]) if r["competency"] == "alg1-1-2"]
    decide(db, copied["_id"], "reject", by="Ms T", comment="copied")
    assert mastery_of(db, ana, "alg1-1-2")["points"] is None
    # What `masteryhub restore` + `statements import` leave: the evidence with the teacher's
    # decisions, the statements again, the worker at the start (masteryhub.backup).
    db["worker_state"].update_one({"_id": WORKER_ID}, {"$set": {
        "position": 0, "checked_upto": CHECK_ALL}, "$unset": {"batch_upto": ""}})
    drain(db)
    assert duplicated_records(db) == {}
    assert evidence_store.get(db, copied["_id"])["status"] == "rejected"
    assert mastery_of(db, ana, "alg1-1-2")["points"] is None
    recompute(db)  # the documented last step: afterwards new statements go the fast way
    assert db["worker_state"].find_one({"_id": WORKER_ID})["checked_upto"] < CHECK_ALL
    assert duplicated_records(db) == {}


def test_an_upgraded_database_keeps_its_credit_history(client, xapi_headers, db, catalog):
    import datetime as dt

    email = "lee@school.example.edu"
    post(client, xapi_headers, [quiz(email, "ALG.1.1", 0.9)])
    drain(db)
    lee = learner_of(db, email)
    assert credit_of(db, lee)["status"] == "in_progress"
    # What a version before progress documents left: the credit in `credits`, awarded
    # and revoked once already, and no progress.
    revoked = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    db["progress"].delete_many({"learner": lee})
    db["credits"].insert_one({"_id": f"{lee}|{CREDIT}", "learner": lee, "rule": CREDIT,
                              "status": "revoked", "mastered": [], "missing": [],
                              "percent": 0.0, "awarded_at": None, "revoked_at": revoked,
                              "transitions": 2, "updated_at": revoked})
    recompute(db)
    credit = credit_of(db, lee)
    assert (credit["status"], credit["transitions"], credit["revoked_at"]) == \
        ("revoked", 2, revoked)
    # Earning it again numbers its audit record after the old ones.
    post(client, xapi_headers, [quiz(email, code, 0.95, n=i)
                                for i, code in enumerate(LEAVES[:10], start=1)])
    drain(db)
    assert credit_of(db, lee)["transitions"] == 3
    assert db["audit"].find_one({"_id": f"{lee}|{CREDIT}|3|credit_awarded"}) is not None
