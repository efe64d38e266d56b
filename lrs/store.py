"""Statement storage in MongoDB: sequence-numbered, exact, and read in bounded windows.

Layout of ``lrs_statements`` (one document per statement):

- ``_id``: the sequence number, allocated in ranges from ``lrs_counters``; listing,
  paging, ``since``/``until`` and the mapping worker all read ranges of it.
- ``sid``: the statement id (unique index: immutability and single GETs).
- ``j``: the statement as served (``format=exact``): the JSON received plus the properties
  the LRS sets, kept as bytes so that any valid JSON (huge numbers, ``$``-keys in
  extensions) is stored and returned exactly.
- ``k``: query keys (see :mod:`lrs.keys`), indexed with ``_id`` as ``(k, _id)``.
- ``st``: stored time; ``v``: true once voided; ``a``: properties the LRS added
  (ignored when a resubmitted statement is compared).

Why sequence ranges and a watermark: a reader that pages or follows the stream must never
skip a statement whose write finished late (sequence 101 visible before 100). Each writer
registers its range as *pending* in the same atomic update that allocates it and clears it
once the write is acknowledged, so the watermark — the highest sequence below which every
write has completed — is just "lowest pending start - 1". It is what
``X-Experience-API-Consistent-Through`` reports and where the mapper may read up to.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pymongo
from bson import Binary
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from lrs import keys as K
from lrs.errors import XAPIError
from lrs.jsonio import dumps_json, loads_json

log = logging.getLogger(__name__)

STATEMENTS = "lrs_statements"  # the collection of stored statements
COUNTER_ID = "statements"
# A writer that died holding a range must not stall readers for ever; any write still
# running after this long has failed (its client timed out), so its range is released.
# 20 s bounds an insert of a full batch even on a loaded server (about 0.3 ms a statement
# here), while a request caught by a database crash fails within it instead of hanging;
# the expiry leaves a margin over it, and is how long mapping waits after an app crash.
PENDING_EXPIRY = dt.timedelta(seconds=45)
WRITE_TIMEOUT_S = 20.0
RELEASE_DELAY_S = 0.05
MAX_PAGE = 500
TIME_SLACK_SEQ = 2000
# Properties that the LRS may set or overwrite, ignored when comparing a resubmitted
# statement with the stored one (Part Two §2.3 "Statement Comparison Requirements").
_COMPARE_IGNORED = ("stored", "authority", "version", "id")


def utcnow() -> dt.datetime:
    # Millisecond precision: what BSON dates keep, so `stored` survives a round trip.
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Watermark:
    seq: int  # every statement with a sequence <= seq is visible
    time: dt.datetime  # every statement stored before this time is visible


@dataclass
class ImportOutcome:
    """What :meth:`StatementStore.insert_imported` did with each statement id."""

    stored: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already stored, same statement
    conflicts: list[str] = field(default_factory=list)  # already stored, different statement
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (id, why)


@dataclass
class Stored:
    """A statement as read back."""

    seq: int
    sid: str
    json: bytes
    stored: dt.datetime
    voided: bool

    def statement(self) -> dict:
        return loads_json(self.json)


def _normalised(stmt: dict, added: Iterable[str]) -> dict:
    drop = set(_COMPARE_IGNORED) | set(added)
    return {k: v for k, v in _context_arrays(stmt).items() if k not in drop}


def _context_arrays(stmt: dict) -> dict:
    """Part Two §2.4.6.2: a single context Activity is returned as an array of one (in a
    SubStatement too)."""
    obj = stmt.get("object")
    if isinstance(obj, dict) and obj.get("objectType") == "SubStatement":
        inner = _context_arrays(obj)
        if inner is not obj:
            stmt = dict(stmt, object=inner)
    context = stmt.get("context")
    if not isinstance(context, dict) or not isinstance(context.get("contextActivities"), dict):
        return stmt
    groups = context["contextActivities"]
    if all(isinstance(v, list) for v in groups.values()):
        return stmt
    arrays = {k: v if isinstance(v, list) else [v] for k, v in groups.items()}
    return dict(stmt, context=dict(context, contextActivities=arrays))


class StatementStore:
    """Everything the statements resource and the mapper need from the database."""

    def __init__(self, db: Database):
        self.db = db
        self.statements = db[STATEMENTS]
        self.counters = db["lrs_counters"]
        self.attachments = db["lrs_attachments"]
        self.activities = db["lrs_activities"]
        self._known_definitions: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._finished: list[str] = []
        self._timer: threading.Timer | None = None

    def ensure_indexes(self) -> None:
        """The only two secondary indexes of the statement collection (ingest pays for each)."""
        self.statements.create_index("sid", unique=True, name="sid_unique")
        self.statements.create_index([("k", 1), ("_id", 1)], name="keys_seq")

    # -- sequence allocation ---------------------------------------------------------
    def _allocate(self, count: int, now: dt.datetime) -> tuple[int, str, list[str]]:
        """Reserve ``count`` sequence numbers as *pending*, in one atomic update that also
        releases this process's finished ranges; returns (first seq, token, orphan voids)."""
        token = uuid.uuid4().hex
        with self._lock:
            finished, self._finished = self._finished, []
        kept = {"$filter": {"input": {"$ifNull": ["$pending", []]}, "as": "p",
                            "cond": {"$not": [{"$in": ["$$p.t", finished]}]}}}
        update = [{"$set": {
            "pending": {"$concatArrays": [kept, [{
                "t": token, "s": {"$add": [{"$ifNull": ["$next", 0]}, 1]}, "at": now}]]},
            "next": {"$add": [{"$ifNull": ["$next", 0]}, count]},
        }}]
        try:
            for _ in range(3):
                # Two writers creating the counter at once (a fresh database): MongoDB
                # fails one upsert with a duplicate key (nothing applied: try again);
                # SecantusDB applies both but may return no document (measured: most such
                # races), so the range is read back from the counter by its token.
                try:
                    doc = self.counters.find_one_and_update(
                        {"_id": COUNTER_ID}, update, upsert=True,
                        return_document=ReturnDocument.AFTER)
                except DuplicateKeyError:
                    continue
                if doc is None:
                    doc = self.counters.find_one({"_id": COUNTER_ID}) or {}
                mine = [p for p in doc.get("pending", ()) if p["t"] == token]
                if mine:
                    return mine[0]["s"], token, doc.get("orphans", [])
            raise RuntimeError("could not allocate statement sequence numbers")
        except BaseException:
            with self._lock:
                self._finished.extend(finished)
            raise

    def _finish(self, token: str) -> None:
        """Mark a range written. Its release rides on this process's next allocation, or a
        timer flushes it within :data:`RELEASE_DELAY_S`: one round trip less per batch."""
        with self._lock:
            self._finished.append(token)
            if self._timer is None:
                self._timer = threading.Timer(RELEASE_DELAY_S, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Release every finished range now (the timer calls it; so may shutdown code).
        Serialised, so a caller returns only after a concurrent timer flush has written."""
        with self._flush_lock:
            with self._lock:
                finished, self._finished = self._finished, []
                self._timer = None
            if not finished:
                return
            try:
                self.counters.update_one({"_id": COUNTER_ID},
                                         {"$pull": {"pending": {"t": {"$in": finished}}}})
            except PyMongoError as exc:
                # The ranges stay pending until PENDING_EXPIRY; readers wait, nothing is lost.
                log.warning("could not release finished sequence ranges: %s", exc)

    def watermark(self) -> Watermark:
        now = utcnow()
        doc = self.counters.find_one({"_id": COUNTER_ID}, {"orphans": 0}) or {}
        live = [p for p in doc.get("pending", ())
                if _aware(p["at"]) > now - PENDING_EXPIRY]
        if not live:
            return Watermark(doc.get("next", 0), now)
        oldest = min(live, key=lambda p: p["s"])
        return Watermark(oldest["s"] - 1, _aware(min(p["at"] for p in live)))

    def last_seq(self) -> int:
        doc = self.counters.find_one({"_id": COUNTER_ID}, {"next": 1}) or {}
        return doc.get("next", 0)

    # -- writing -----------------------------------------------------------------------
    def insert(self, statements: Sequence[dict], *, authority: dict,
               credential_key: str | None, version: str = "1.0.3",
               attachments: dict[str, tuple[str, bytes]] | None = None) -> list[str]:
        """Store validated statements as a batch; return their ids in order.

        Part Three §2.1.2: a statement whose id is already stored with the same content is
        accepted and not stored again; with different content the whole batch is 409 and
        nothing of it stays stored. Why optimistic (insert, then look at duplicates): the
        unique index finds them for free, so the common case costs no extra round trip.
        """
        now = utcnow()
        stored_iso = iso(now)
        ids: list[str] = []
        seen: set[str] = set()
        for i, stmt in enumerate(statements):
            sid = stmt.get("id")
            if sid is None:
                sid = str(uuid.uuid4())
            else:
                sid = sid.lower()
                if sid in seen:
                    raise XAPIError(f"statement[{i}].id: {sid} appears twice in this batch")
            seen.add(sid)
            ids.append(sid)

        void_targets = {
            stmt["object"]["id"].lower(): sid
            for stmt, sid in zip(statements, ids, strict=True)
            if stmt["verb"]["id"] == K.VOIDED_VERB
        }
        referenced = {stmt["object"]["id"].lower() for stmt in statements
                      if stmt["object"].get("objectType") == "StatementRef"}
        targets = self._by_sid(referenced, {"sid": 1, "k": 1, "vb": 1}) if referenced else {}
        for target_id, voider in void_targets.items():
            target = targets.get(target_id)
            if target is not None and target.get("vb"):
                raise XAPIError(f"statement {voider} voids {target_id}, which is itself a "
                                "voiding statement; voiding statements cannot be voided", 400)
            if target_id in seen:
                raise XAPIError(f"statement {voider} voids {target_id}, sent in the same "
                                "batch; send the voiding statement after it")

        start, token, orphans = self._allocate(len(statements), now)
        try:
            orphan_set = set(orphans)
            docs = []
            for offset, (stmt, sid) in enumerate(zip(statements, ids, strict=True)):
                full, added = self._complete(stmt, sid, stored_iso, authority, version)
                k = K.statement_keys(full, credential_key)
                obj = full["object"]
                if obj.get("objectType") == "StatementRef":
                    target = targets.get(obj["id"].lower())
                    if target is not None:
                        k |= K.inherited_keys(target["k"])
                doc = {"_id": start + offset, "sid": sid, "j": Binary(dumps_json(full)),
                       "st": now, "k": sorted(k)}
                if added:
                    doc["a"] = added
                if sid in orphan_set:
                    doc["v"] = True  # voided by a statement that arrived before it
                if full["verb"]["id"] == K.VOIDED_VERB:
                    doc["vb"] = True
                docs.append(doc)
            self._insert_docs(docs, statements)
            if void_targets:
                self._void(void_targets, targets)
            self._void_late_arrivals(ids, orphan_set)
            if attachments:
                self._store_attachments(attachments)
        finally:
            self._finish(token)
        self._remember_definitions(statements)
        return ids

    def insert_imported(self, items: Sequence[tuple[dict, bytes | None]], *,
                        credential_key: str | None = None,
                        default_authority: dict | None = None) -> ImportOutcome:
        """Store statements migrated from another LRS or an export, keeping the ``stored``
        and ``authority`` they already carry (the normal :meth:`insert` sets both, as
        Part Two §2.4.8/§2.4.9 ask of a statement *received*; an operator's import is
        not a receipt). Only what is missing is filled (id and stored never are: the
        caller supplies ids). ``items`` are (validated statement, its exact JSON bytes
        or None); the bytes become ``format=exact`` when nothing had to be filled.

        Unlike :meth:`insert`, one bad statement never fails the batch: an id already
        stored with the same statement is ``present``, with a different one a
        ``conflict``; a statement voiding a voiding statement is ``rejected``. The caller
        sends a voiding statement in a later batch than its target (as for insert)."""
        now = utcnow()
        outcome = ImportOutcome()
        wanted: dict[str, tuple[dict, bytes | None]] = {}
        for stmt, raw in items:
            sid = stmt["id"].lower()
            if sid in wanted:
                first = wanted[sid][0]
                (outcome.present if _normalised(first, ()) == _normalised(stmt, ())
                 else outcome.conflicts).append(sid)
                continue
            wanted[sid] = (stmt, raw)
        existing = self._by_sid(wanted, {"sid": 1, "j": 1, "a": 1})
        for sid, old in existing.items():
            stmt, raw = wanted.pop(sid)
            added = old.get("a", ())  # what the LRS filled is ignored on both sides
            if (raw is not None and bytes(old["j"]) == raw) or _normalised(
                    loads_json(old["j"]), added) == _normalised(stmt, added):
                outcome.present.append(sid)
            else:
                outcome.conflicts.append(sid)
        referenced = {s["object"]["id"].lower() for s, _ in wanted.values()
                      if s["object"].get("objectType") == "StatementRef"}
        targets = self._by_sid(referenced, {"sid": 1, "k": 1, "vb": 1}) if referenced else {}
        void_targets: dict[str, str] = {}
        for sid, (stmt, _raw) in list(wanted.items()):
            if stmt["verb"]["id"] != K.VOIDED_VERB:
                continue
            target_id = stmt["object"]["id"].lower()
            if (targets.get(target_id) or {}).get("vb"):
                wanted.pop(sid)
                outcome.rejected.append((sid, f"voids {target_id}, a voiding statement"))
            else:
                void_targets[target_id] = sid
        if not wanted:
            return outcome
        start, token, orphans = self._allocate(len(wanted), now)
        try:
            orphan_set = set(orphans)
            docs = []
            for offset, (sid, (stmt, raw)) in enumerate(wanted.items()):
                full = dict(_context_arrays(stmt), id=sid)
                added = []
                full.setdefault("stored", iso(now))
                if "authority" not in full and default_authority is not None:
                    full["authority"] = default_authority
                if "timestamp" not in full:
                    full["timestamp"] = full["stored"]
                    added.append("timestamp")
                if "version" not in full:
                    full["version"] = "1.0.0"
                    added.append("version")
                exact = raw if raw is not None and full == stmt else dumps_json(full)
                k = K.statement_keys(full, credential_key)
                if full["object"].get("objectType") == "StatementRef":
                    target = targets.get(full["object"]["id"].lower())
                    if target is not None:
                        k |= K.inherited_keys(target["k"])
                stored_at = _parse_stored(full["stored"])
                doc = {"_id": start + offset, "sid": sid, "j": Binary(exact), "st": stored_at,
                       "k": sorted(k)}
                if added:
                    doc["a"] = added
                if sid in orphan_set:
                    doc["v"] = True
                if full["verb"]["id"] == K.VOIDED_VERB:
                    doc["vb"] = True
                docs.append(doc)
            try:
                with pymongo.timeout(WRITE_TIMEOUT_S):
                    self.statements.insert_many(docs, ordered=False)
                failed: set[int] = set()
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != 11000 for e in errors):
                    raise
                failed = {e["index"] for e in errors}  # stored meanwhile by another writer
            for i, doc in enumerate(docs):
                (outcome.present if i in failed else outcome.stored).append(doc["sid"])
            if void_targets:
                self._void(void_targets, targets)
            self._void_late_arrivals(outcome.stored, orphan_set)
        finally:
            self._finish(token)
        self._remember_definitions([stmt for stmt, _ in wanted.values()])
        return outcome

    def _by_sid(self, sids: Iterable[str], projection: dict) -> dict[str, dict]:
        return {d["sid"]: d for d in self.statements.find({"sid": {"$in": list(sids)}},
                                                          projection)}

    def _void(self, void_targets: dict[str, str], known: dict[str, dict]) -> None:
        """Mark targets voided; remember targets not stored yet, so they arrive voided.

        A target may be stored at this very moment by another request, which looked at
        the orphans before we add to them. Hence the order: remember the target first,
        then mark whatever is stored. A target stored before the marking is marked here;
        one stored after it finds the orphan when it looks again after its own insert
        (:meth:`_void_late_arrivals`). Targets found stored by then are marked once more
        and forgotten."""
        unknown = [t for t in void_targets if t not in known]
        if unknown:
            self.counters.update_one({"_id": COUNTER_ID},
                                     {"$addToSet": {"orphans": {"$each": unknown}}})
        self.statements.update_many(
            {"sid": {"$in": list(void_targets)}, "vb": {"$exists": False}},
            {"$set": {"v": True}})
        if unknown:
            arrived = sorted(self._by_sid(unknown, {"sid": 1}))
            if arrived:
                self.statements.update_many(
                    {"sid": {"$in": arrived}, "vb": {"$exists": False}}, {"$set": {"v": True}})
                self.counters.update_one({"_id": COUNTER_ID},
                                         {"$pullAll": {"orphans": arrived}})

    def _void_late_arrivals(self, ids: Sequence[str], seen: set[str]) -> None:
        """After inserting: statements voided by a request that raced ours (it added them
        to the orphans after we allocated, and found them not stored yet) are marked now,
        before our range is released; orphans that arrived are forgotten."""
        doc = self.counters.find_one({"_id": COUNTER_ID}, {"orphans": 1}) or {}
        orphans = set(doc.get("orphans") or ())
        late = orphans.intersection(ids)
        racing = sorted(late - seen)
        if racing:
            self.statements.update_many({"sid": {"$in": racing}, "vb": {"$exists": False}},
                                        {"$set": {"v": True}})
        forget = sorted(late | seen.intersection(ids))
        if forget:
            self.counters.update_one({"_id": COUNTER_ID}, {"$pullAll": {"orphans": forget}})

    @staticmethod
    def _complete(stmt: dict, sid: str, stored_iso: str, authority: dict,
                  version: str) -> tuple[dict, list[str]]:
        """Fill id, stored, authority, timestamp and version (Part Two §2.4)."""
        full = _context_arrays(stmt)
        full = dict(full) if full is stmt else full
        added: list[str] = []
        full["id"] = sid
        if "timestamp" not in full:
            full["timestamp"] = stored_iso
            added.append("timestamp")
        full["stored"] = stored_iso
        full["authority"] = authority
        if "version" not in full:
            full["version"] = "2.0.0" if version.startswith("2") else "1.0.0"
            added.append("version")
        return full, added

    def _insert_docs(self, docs: list[dict], statements: Sequence[dict]) -> None:
        """Insert; ids already stored must hold the same statement, else undo and 409."""
        try:
            with pymongo.timeout(WRITE_TIMEOUT_S):
                self.statements.insert_many(docs, ordered=False)
            return
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != 11000 for e in errors):
                self._undo(docs, {e["index"] for e in errors})
                raise
            failed = {e["index"] for e in errors}
        stored = self._by_sid([docs[i]["sid"] for i in failed], {"sid": 1, "j": 1, "a": 1})
        for i in sorted(failed):
            old = stored.get(docs[i]["sid"])
            mine = statements[i]
            same = old is not None and _normalised(loads_json(old["j"]), old.get("a", ())) \
                == _normalised(mine, [] if "timestamp" in mine else ["timestamp"])
            if not same:
                self._undo(docs, failed)
                raise XAPIError(f"statement[{i}].id: a different statement with id "
                                f"{docs[i]['sid']} is already stored (statements are "
                                "immutable)", 409)

    def _undo(self, docs: list[dict], failed: set[int]) -> None:
        ours = [d["_id"] for i, d in enumerate(docs) if i not in failed]
        if ours:
            self.statements.delete_many({"_id": {"$in": ours}})

    def _store_attachments(self, attachments: dict[str, tuple[str, bytes]]) -> None:
        ops = [pymongo.UpdateOne({"_id": sha2}, {"$setOnInsert": {
            "contentType": content_type, "data": Binary(data), "length": len(data)}},
            upsert=True) for sha2, (content_type, data) in attachments.items()]
        self.attachments.bulk_write(ops, ordered=False)

    def _remember_definitions(self, statements: Sequence[dict]) -> None:
        """Keep each activity's latest definition for GET /activities (Part Three §2.5).

        An in-process cache skips the write when a definition has not changed, which is
        nearly always: providers repeat the same activities in every statement.
        """
        changed: dict[str, dict] = {}
        for stmt in statements:
            for activity in _activities_with_definitions(stmt):
                encoded = dumps_json(activity["definition"])
                if self._known_definitions.get(activity["id"]) != encoded:
                    self._known_definitions[activity["id"]] = encoded
                    changed[activity["id"]] = activity["definition"]
        if not changed:
            return
        current = {d["_id"]: loads_json(d["j"]) for d in
                   self.activities.find({"_id": {"$in": list(changed)}})}
        ops = []
        for activity_id, definition in changed.items():
            merged = merge_definitions(current.get(activity_id, {}).get("definition", {}),
                                       definition)
            body = {"objectType": "Activity", "id": activity_id, "definition": merged}
            ops.append(pymongo.ReplaceOne({"_id": activity_id},
                                          {"j": Binary(dumps_json(body))}, upsert=True))
        self.activities.bulk_write(ops, ordered=False)

    # -- reading -----------------------------------------------------------------------
    def get(self, sid: str) -> Stored | None:
        doc = self.statements.find_one({"sid": sid.lower()})
        return _stored(doc) if doc else None

    def attachment(self, sha2: str) -> tuple[str, bytes] | None:
        doc = self.attachments.find_one({"_id": sha2})
        return (doc["contentType"], bytes(doc["data"])) if doc else None

    def find(self, filters: list[list[str]], *, hi: int, lo: int, limit: int,
             ascending: bool, since: dt.datetime | None = None,
             until: dt.datetime | None = None) -> list[Stored]:
        """Up to ``limit`` non-voided statements with ``lo < seq <= hi`` whose keys match
        every filter (each a list of alternative keys, most selective first).

        Why this shape: the database gets one key condition and a sequence window, which
        SecantusDB serves from the ``(k, _id)`` index (it plans ``$all``/``$and`` over the
        same array, and ``$or``, as collection scans); further filters and the time bounds
        are checked here on the few candidates. Windows widen until the page is full, so no
        query asks the database to sort an unbounded candidate set.
        """
        # `v` (voided) is checked here too: a condition on it makes SecantusDB scan.
        first = filters[0] if filters else [K.ALL]
        base: dict = {"k": first[0] if len(first) == 1 else {"$in": first}}
        rest = [frozenset(f) for f in filters[1:]]
        projection = {"sid": 1, "j": 1, "st": 1, "v": 1, "k": 1} if rest else {
            "sid": 1, "j": 1, "st": 1, "v": 1}
        found: list[Stored] = []
        window = max(limit * 4, 512)
        while hi > lo and len(found) < limit:
            # Read (lower, upper] of the sequence; `edge` moves past what was read.
            if ascending:
                lower, upper = lo, min(hi, lo + window)
            else:
                lower, upper = max(lo, hi - window), hi
            batch = limit - len(found) + 8  # a few spare for voided or filtered-out ones
            docs = list(self.statements.find(
                dict(base, _id={"$gt": lower, "$lte": upper}), projection,
                sort=[("_id", 1 if ascending else -1)], limit=batch))
            for doc in docs:
                if doc.get("v") or (rest and not all(
                        alternatives.intersection(doc["k"]) for alternatives in rest)):
                    continue
                stored = _aware(doc["st"])
                if (since is not None and stored <= since) or (
                        until is not None and stored > until):
                    continue
                found.append(_stored(doc))
                if len(found) == limit:
                    break
            if len(docs) == batch:  # the window has more: continue after the last one read
                if ascending:
                    lo = docs[-1]["_id"]
                else:
                    hi = docs[-1]["_id"] - 1
            else:  # the window is exhausted: move past it and widen
                if ascending:
                    lo = upper
                else:
                    hi = lower
                window *= 4
        return found

    def seq_after(self, when: dt.datetime) -> int:
        """The highest sequence stored at or before ``when`` (0 if none), found by binary
        search with point reads on ``_id`` because ``stored`` grows with the sequence.
        Writers racing each other can interleave by a few milliseconds, so callers widen
        the bound by :data:`TIME_SLACK_SEQ` and filter on ``st`` exactly."""
        low, high = 0, self.last_seq()
        while low < high:
            mid = (low + high + 1) // 2
            doc = self.statements.find_one({"k": K.ALL, "_id": {"$gte": mid}}, {"st": 1},
                                           sort=[("_id", 1)])
            if doc is not None and _aware(doc["st"]) <= when:
                low = mid
            else:
                high = mid - 1
        return low

    def statements_in_range(self, lo: int, hi: int, batch: int = 500) -> Iterable[dict]:
        """Every statement (voided included) with ``lo < seq <= hi`` in sequence order, for
        consumers that follow the stream (the mapper)."""
        while lo < hi:
            upper = min(hi, lo + batch)
            docs = list(self.statements.find(
                {"k": K.ALL, "_id": {"$gt": lo, "$lte": upper}}, sort=[("_id", 1)]))
            yield from docs
            lo = upper


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _parse_stored(value: str) -> dt.datetime:
    """An imported statement's ``stored`` as the BSON date kept in ``st`` (milliseconds)."""
    from lrs.validation import parse_timestamp

    try:
        moment = parse_timestamp(value, "stored").astimezone(dt.UTC)
    except (XAPIError, OverflowError, ValueError):
        return utcnow()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _stored(doc: dict) -> Stored:
    return Stored(seq=doc["_id"], sid=doc["sid"], json=bytes(doc["j"]),
                  stored=_aware(doc["st"]), voided=bool(doc.get("v")))


def _activities_with_definitions(stmt: dict) -> Iterable[dict]:
    stack = [stmt]
    while stack:
        current = stack.pop()
        obj = current.get("object", {})
        if obj.get("objectType", "Activity") == "Activity" and "definition" in obj:
            yield obj
        elif obj.get("objectType") == "SubStatement":
            stack.append(obj)
        for value in (current.get("context") or {}).get("contextActivities", {}).values():
            for activity in value if isinstance(value, list) else (value,):
                if "definition" in activity:
                    yield activity


def merge_definitions(old: dict, new: dict) -> dict:
    """Newer values win; language maps and extensions are merged key by key."""
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
