"""Evidence records, stored in buckets: one document per learner and mapping batch.

An evidence record is one (statement, learner, competency, rule) with its score, source
type, time, status and the teacher's decisions (``actions``); its id is
``statement|learner|competency|rule`` (:func:`evidence_id`). Records are what this module
takes and returns, always with the shape they have had from the start::

    {_id, statement, seq, learner, competency, framework, rule, points, source_type,
     timestamp, activity, activity_name, provider, status, voided, actions,
     superseded_status?, superseded_at?}

Why buckets: the mapping worker must keep up with the LRS, and on the database every
document inserted costs about the same whatever its size, and every index adds to it. A
statement usually gives a learner several records (one per competency), and a batch of
statements gives an active learner many; one document per record made evidence inserts
half of the worker's time. A bucket holds the records one batch gave one learner
(``_id`` ``learner|seq of the first statement``), so a batch inserts one document per
learner. Buckets are found by ``learner`` (index); pending records by ``pending`` (the
frameworks a bucket has pending records in; a sparse index). A record is found by id
through its learner (the id names it).

Changes to records after their insert (a teacher's decision, voiding, re-mapping, a
merge) replace their bucket conditionally on its version ``v`` and retry on a conflict, so
that concurrent writers never lose each other's changes (:func:`change`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

import pymongo
import pymongo.errors
from pymongo.database import Database

COLLECTION = "evidence"
CHUNK = 200  # learners per $in
# Records per bucket at most: a learner who brings most of a batch (or a merge of a long
# history) makes several buckets, far from the 16 MB document limit.
MAX_ITEMS = 2000
RETRIES = 50
log = logging.getLogger(__name__)


class ConflictError(RuntimeError):
    """A bucket kept changing under us (more than RETRIES times in a row)."""


def evidence_id(statement: str, learner: str, competency: str, rule: str) -> str:
    return f"{statement}|{learner}|{competency}|{rule}"


def learner_of(record_id: str) -> str | None:
    """The learner an evidence id names (None for something that is not one)."""
    parts = record_id.split("|")
    return parts[1] if len(parts) >= 4 and parts[1] else None


def bucket_id(learner: str, seq: int, suffix: str = "") -> str:
    return f"{learner}|{seq:012d}{suffix}"


def _pending_of(items: Iterable[dict]) -> list[str]:
    return sorted({i["framework"] for i in items if i.get("status") == "pending"})


def _bucket(learner: str, key: str, items: list[dict]) -> dict:
    doc = {"_id": key, "learner": learner, "v": 1,
           "items": [{k: v for k, v in i.items() if k != "learner"} for i in items]}
    if pending := _pending_of(items):
        doc["pending"] = pending
    return doc


def _records(bucket: dict) -> list[dict]:
    if "items" not in bucket:  # a record of an older version, not migrated yet
        return [bucket]
    learner = bucket["learner"]
    return [dict(item, learner=learner) for item in bucket["items"]]


def ensure_indexes(db: Database) -> None:
    db[COLLECTION].create_index([("learner", 1)])
    db[COLLECTION].create_index([("pending", 1)], sparse=True)


# -- reading ----------------------------------------------------------------------------
def buckets_of(db: Database, learners: Iterable[str], query: dict | None = None
               ) -> Iterable[dict]:
    wanted = sorted(set(learners))
    for i in range(0, len(wanted), CHUNK):
        yield from db[COLLECTION].find({"learner": {"$in": wanted[i:i + CHUNK]},
                                        **(query or {})})


def of_learners(db: Database, learners: Iterable[str],
                competencies: Iterable[str] | None = None, *,
                statements: Iterable[str] | None = None) -> list[dict]:
    """These learners' records (of these competencies, of these statements)."""
    only = None if competencies is None else set(competencies)
    sids = None if statements is None else set(statements)
    # A short list of statements narrows the read on the server; a long $in is slower
    # there than reading the learners' buckets whole.
    query = {"items.statement": {"$in": sorted(sids)}} \
        if sids is not None and len(sids) <= CHUNK else None
    return [r for b in buckets_of(db, learners, query) for r in _records(b)
            if (only is None or r["competency"] in only)
            and (sids is None or r["statement"] in sids)]


def by_ids(db: Database, ids: Iterable[str]) -> list[dict]:
    """The records with these ids (those that exist)."""
    wanted = set(ids)
    learners = {lr for i in wanted if (lr := learner_of(i))}
    if not learners:
        return []
    return [r for b in buckets_of(db, learners, {"items._id": {"$in": sorted(wanted)}})
            for r in _records(b) if r["_id"] in wanted]


def get(db: Database, record_id: str) -> dict | None:
    found = by_ids(db, [record_id])
    return found[0] if found else None


def pending(db: Database, frameworks: Iterable[str] | None = None) -> list[dict]:
    """Records waiting for a teacher (in these frameworks), voided ones included."""
    only = None if frameworks is None else set(frameworks)
    query = {"pending": {"$exists": True}} if only is None else \
        {"pending": {"$in": sorted(only)}}
    return [r for b in db[COLLECTION].find(query) for r in _records(b)
            if r["status"] == "pending" and (only is None or r["framework"] in only)]


def all_records(db: Database) -> Iterable[dict]:
    """Every record (exports, tests, migrations): a whole-collection read."""
    for b in db[COLLECTION].find():
        yield from _records(b)


# -- writing ----------------------------------------------------------------------------
def insert(db: Database, records: list[dict], *, batch: int, suffix: str = "") -> list[dict]:
    """Store new records, one bucket per learner: ``learner|batch``+suffix, ``batch``
    being where the batch of statements that produced them starts. The same batch done
    again (after a crash) makes the same buckets, whatever it produces this time; the
    records that were stored already are returned and left as stored (teacher decisions
    and all), a bucket found existing gets the records it lacks. A record must not be in
    another bucket already: the worker redoes a batch over the same statements, re-mapping
    and merges insert only records they did not find."""
    by_learner: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_learner[r["learner"]].append(r)
    return _insert_buckets(db, [
        _bucket(lr, bucket_id(lr, batch, suffix) + (f"#{k}" if k else ""),
                items[k * MAX_ITEMS:(k + 1) * MAX_ITEMS])
        for lr, items in by_learner.items()
        for k in range((len(items) + MAX_ITEMS - 1) // MAX_ITEMS)])


def _insert_buckets(db: Database, docs: list[dict]) -> list[dict]:
    """Insert buckets; one that exists already gets the records it lacks. Returns the
    records that were stored already."""
    if not docs:
        return []
    try:
        db[COLLECTION].insert_many(docs, ordered=False)
        return []
    except pymongo.errors.BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        existing = [docs[e["index"]] for e in errors]
    seen: dict[str, dict] = {}  # by id: a retried replacement finds them again
    for doc in existing:
        wanted = {i["_id"]: i for i in doc["items"]}

        def add_missing(items: list[dict], wanted=wanted, learner=doc["learner"]
                        ) -> list[dict] | None:
            have = {i["_id"]: i for i in items}
            seen.update((k, dict(have[k], learner=learner)) for k in wanted if k in have)
            missing = [i for k, i in wanted.items() if k not in have]
            return items + missing if missing else None

        # The bucket may go meanwhile (a merge emptied it): then insert ours after all.
        while not _change_bucket(db, doc["_id"], add_missing):
            try:
                db[COLLECTION].insert_one(doc)
                break
            except pymongo.errors.DuplicateKeyError:
                continue
    return list(seen.values())


def _change_bucket(db: Database, key: str, fn: Callable[[list[dict]], list[dict] | None]
                   ) -> bool:
    """Replace a bucket's items with ``fn(items)`` (None: no change), conditionally on
    its version; retried on a conflict. False when the bucket does not exist."""
    collection = db[COLLECTION]
    for _ in range(RETRIES):
        doc = collection.find_one({"_id": key})
        if doc is None or "items" not in doc:
            return False
        items = fn([dict(i) for i in doc["items"]])
        if items is None:
            return True
        update: dict = {"$set": {"items": items, "v": doc.get("v", 0) + 1}}
        if pending_frameworks := _pending_of(items):
            update["$set"]["pending"] = pending_frameworks
        else:
            update["$unset"] = {"pending": ""}
        if not items:
            if collection.delete_one({"_id": key, "v": doc.get("v", 0)}).deleted_count:
                return True
            continue
        if collection.update_one({"_id": key, "v": doc.get("v", 0)}, update).modified_count:
            return True
    raise ConflictError(f"evidence bucket {key} kept changing")


def change(db: Database, learners: Iterable[str],
           fn: Callable[[dict], dict | None], *, ids: Iterable[str] | None = None,
           statements: Iterable[str] | None = None) -> list[tuple[dict, dict]]:
    """Apply ``fn`` to records of these learners (only those with these ids, or of these
    statements): it returns the changed record, or None to leave it. Each bucket is
    replaced conditionally on its version and retried on a conflict, so a concurrent
    change is never lost. Returns (before, after) of each record changed."""
    wanted_ids = None if ids is None else set(ids)
    sids = None if statements is None else set(statements)
    query: dict = {}
    if wanted_ids is not None:
        query["items._id"] = {"$in": sorted(wanted_ids)}
    if sids is not None:
        query["items.statement"] = {"$in": sorted(sids)}
    changed: list[tuple[dict, dict]] = []
    keys = [(b["_id"], b["learner"]) for b in buckets_of(db, learners, query)]
    for key, learner in keys:
        mine: list[tuple[dict, dict]] = []

        def apply(items: list[dict], learner=learner, mine=mine) -> list[dict] | None:
            mine.clear()
            out = []
            for item in items:
                record = dict(item, learner=learner)
                if (wanted_ids is None or item["_id"] in wanted_ids) and \
                        (sids is None or item["statement"] in sids):
                    new = fn(dict(record))
                    if new is not None and new != record:
                        mine.append((record, new))
                        item = {k: v for k, v in new.items() if k != "learner"}
                out.append(item)
            return out if mine else None

        if _change_bucket(db, key, apply):
            changed += mine
    return changed


def remove(db: Database, learner: str, ids: Iterable[str]) -> None:
    """Delete these records of a learner (after moving them elsewhere: a merge)."""
    gone = set(ids)
    for b in list(buckets_of(db, [learner], {"items._id": {"$in": sorted(gone)}})):
        _change_bucket(db, b["_id"], lambda items: [i for i in items if i["_id"] not in gone]
                       if any(i["_id"] in gone for i in items) else None)


def migrate_flat(db: Database, chunk: int = 2000) -> tuple[int, int]:
    """Move records stored one per document (versions before buckets) into buckets, one
    per learner and statement (ids that any number of processes migrating at once agree
    on), then delete them. Safe to interrupt and to run concurrently. Returns how many
    were moved and the highest statement sequence among them."""
    collection = db[COLLECTION]
    moved = highest = 0
    while True:
        flat = list(collection.find({"items": {"$exists": False}}).limit(chunk))
        if not flat:
            return moved, highest
        highest = max(highest, *(r["seq"] for r in flat))
        by_key: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for record in flat:
            by_key[(record["learner"], record["seq"])].append(record)
        _insert_buckets(db, [_bucket(lr, bucket_id(lr, seq, "m"), records)
                             for (lr, seq), records in by_key.items()])
        collection.delete_many({"_id": {"$in": [r["_id"] for r in flat]},
                                "items": {"$exists": False}})
        moved += len(flat)


def move_learner(db: Database, from_learner: str, to_learner: str,
                 merge: Callable[[dict, dict], dict]) -> int:
    """Move a merged learner's records to the learner they now are (ids re-keyed); a
    record the target has already (a Group statement both were members of) becomes
    ``merge(target's, moved)``. Bucket by bucket: a bucket is deleted only if it did not
    change while it was copied (a decision or a void made meanwhile is copied again, not
    lost). Safe to run again after an interruption. Returns how many records moved."""
    moved = 0
    for key in [b["_id"] for b in buckets_of(db, [from_learner])]:
        for _ in range(RETRIES):
            doc = db[COLLECTION].find_one({"_id": key})
            if doc is None or "items" not in doc:
                break
            new = {}
            for r in _records(doc):
                rid = evidence_id(r["statement"], to_learner, r["competency"], r["rule"])
                new[rid] = dict(r, _id=rid, learner=to_learner)
            there = {e["_id"] for e in by_ids(db, new)}
            change(db, [to_learner], lambda e, new=new: merge(e, new[e["_id"]]), ids=there)
            insert(db, [r for k, r in new.items() if k not in there], batch=0,
                   suffix=f"@{key}")
            if db[COLLECTION].delete_one({"_id": key, "v": doc.get("v", 0)}).deleted_count:
                moved += len(new)
                break
        else:
            raise ConflictError(f"evidence bucket {key} kept changing during a merge")
    return moved
