"""Evidence buckets (mappings.evidence): retried batches, concurrent changes, and the move of
an older database's one-document-per-record evidence into buckets."""

from __future__ import annotations

import datetime as dt

import pytest

from mappings import evidence
from mappings.models import ensure_indexes

WHEN = dt.datetime(2026, 9, 1, 10, 0, tzinfo=dt.UTC)


def record(sid: str, learner: str, competency: str, *, seq: int, status: str = "accepted",
           actions: list | None = None) -> dict:
    return {"_id": evidence.evidence_id(sid, learner, competency, "rs:r1"), "statement": sid,
            "seq": seq, "learner": learner, "competency": competency, "framework": "fw",
            "rule": "rs:r1", "points": 3.0, "source_type": "online_course",
            "timestamp": WHEN, "activity": "https://example.com/a", "activity_name": None,
            "provider": None, "status": status, "voided": False, "actions": actions or []}


def test_a_batch_done_again_stores_each_record_once_and_keeps_decisions(app, db):
    first = [record("s1", "L1", "c1", seq=10), record("s2", "L1", "c2", seq=11),
             record("s2", "L2", "c2", seq=11, status="pending")]
    assert evidence.insert(db, first, batch=10) == []
    approved = evidence.change(db, ["L2"], lambda r: dict(r, status="accepted",
                                                            actions=[{"action": "approve"}]),
                               ids=[first[2]["_id"]])
    assert len(approved) == 1
    # The same batch again, grown by a statement that arrived meanwhile: the records
    # stored before come back as seen (with the teacher's decision), the new one is added
    # to the same bucket, nothing is stored twice.
    again = [*first, record("s3", "L1", "c1", seq=12)]
    seen = evidence.insert(db, again, batch=10)
    assert sorted(r["_id"] for r in seen) == sorted(r["_id"] for r in first)
    assert next(r for r in seen if r["learner"] == "L2")["status"] == "accepted"
    stored = sorted(r["_id"] for r in evidence.all_records(db))
    assert stored == sorted(r["_id"] for r in again)
    assert db[evidence.COLLECTION].count_documents({}) == 2  # one bucket per learner
    assert evidence.pending(db) == []


def test_concurrent_changes_to_one_bucket_are_both_kept(app, db):
    a, b = record("s1", "L1", "c1", seq=1), record("s2", "L1", "c2", seq=2)
    evidence.insert(db, [a, b], batch=1)
    interfered = []

    def approve(r: dict) -> dict:
        if not interfered:  # another writer changes the bucket between our read and write
            interfered.append(True)
            evidence.change(db, ["L1"], lambda o: dict(o, voided=True), ids=[b["_id"]])
        return dict(r, status="rejected")

    evidence.change(db, ["L1"], approve, ids=[a["_id"]])
    got = {r["_id"]: r for r in evidence.all_records(db)}
    assert got[a["_id"]]["status"] == "rejected" and got[b["_id"]]["voided"] is True


def test_lookups_by_id_learner_statement_and_review_queue(app, db):
    evidence.insert(db, [record("s1", "L1", "c1", seq=1),
                         record("s1", "L1", "c2", seq=1, status="pending"),
                         record("s2", "L2", "c1", seq=2)], batch=1)
    one = evidence.evidence_id("s1", "L1", "c2", "rs:r1")
    assert evidence.get(db, one)["status"] == "pending"
    assert evidence.get(db, evidence.evidence_id("s9", "L1", "c2", "rs:r1")) is None
    assert evidence.get(db, "not an evidence id") is None
    assert [r["_id"] for r in evidence.pending(db, ["fw"])] == [one]
    assert evidence.pending(db, ["other"]) == []
    assert {r["competency"] for r in evidence.of_learners(db, ["L1"], ["c1"])} == {"c1"}
    assert {r["learner"] for r in evidence.of_learners(db, ["L1", "L2"],
                                                       statements=["s2"])} == {"L2"}
    evidence.change(db, ["L1"], lambda r: dict(r, status="accepted"), ids=[one])
    assert evidence.pending(db) == []
    assert db[evidence.COLLECTION].count_documents({"pending": {"$exists": True}}) == 0


def test_an_older_database_moves_its_evidence_into_buckets_once(app, db):
    decision = {"action": "override", "by": "Ms T", "at": WHEN, "comment": "seen it",
                "points": 4.0, "credential": None}
    flat = [record("s1", "L1", "c1", seq=1, actions=[decision]),
            record("s1", "L1", "c2", seq=1, status="pending"),
            record("s2", "L2", "c1", seq=2)]
    collection = db[evidence.COLLECTION]
    collection.drop_indexes()
    collection.insert_many([dict(r) for r in flat])
    collection.create_index([("learner", 1), ("competency", 1)])  # what older versions made
    collection.create_index([("statement", 1)])
    ensure_indexes()
    moved = {r["_id"]: r for r in evidence.all_records(db)}
    assert sorted(moved) == sorted(r["_id"] for r in flat)
    assert moved[flat[0]["_id"]]["actions"][0]["comment"] == "seen it"
    assert collection.count_documents({"items": {"$exists": False}}) == 0
    assert [r["_id"] for r in evidence.pending(db)] == [flat[1]["_id"]]
    names = set(collection.index_information())
    assert not names & {"learner_1_competency_1", "statement_1"}
    assert {"learner_1", "pending_1"} <= names
    ensure_indexes()  # again: nothing left to move, nothing changes
    assert sorted(r["_id"] for r in evidence.all_records(db)) == sorted(moved)


def test_a_bucket_that_keeps_changing_is_an_error_not_a_lost_write(app, db):
    evidence.insert(db, [record("s1", "L1", "c1", seq=1)], batch=1)

    def always_interfere(r: dict) -> dict:
        db[evidence.COLLECTION].update_one({"learner": "L1"}, {"$inc": {"v": 1}})
        return dict(r, status="rejected")

    with pytest.raises(evidence.ConflictError):
        evidence.change(db, ["L1"], always_interfere)
    assert next(evidence.all_records(db))["status"] == "accepted"


def test_a_learner_who_brings_a_whole_batch_gets_several_buckets(app, db):
    many = [record(f"s{i}", "L1", "c1", seq=i) for i in range(evidence.MAX_ITEMS * 2 + 10)]
    assert evidence.insert(db, many, batch=0) == []
    assert db[evidence.COLLECTION].count_documents({"learner": "L1"}) == 3
    assert len(evidence.of_learners(db, ["L1"])) == len(many)
    assert evidence.insert(db, many, batch=0) != []  # done again: all seen, none added
    assert len(evidence.of_learners(db, ["L1"])) == len(many)


def test_a_merge_copies_again_what_changed_while_it_was_copying(app, db, monkeypatch):
    from mappings.identity import merge_evidence

    a, b = record("s1", "OLD", "c1", seq=1), record("s2", "OLD", "c2", seq=2)
    evidence.insert(db, [a, b], batch=1)
    real_insert = evidence.insert
    interfered = []

    def insert_then_void(db_, records, **kwargs):
        out = real_insert(db_, records, **kwargs)
        if not interfered:  # a void lands on the old learner's bucket mid-merge
            interfered.append(True)
            evidence.change(db, ["OLD"], lambda r: dict(r, voided=True), ids=[b["_id"]])
        return out

    monkeypatch.setattr(evidence, "insert", insert_then_void)
    assert evidence.move_learner(db, "OLD", "NEW", merge_evidence) == 2
    moved = {r["competency"]: r for r in evidence.of_learners(db, ["NEW"])}
    assert moved["c2"]["voided"] is True and moved["c1"]["voided"] is False
    assert evidence.of_learners(db, ["OLD"]) == []
    assert len(list(evidence.all_records(db))) == 2
