"""The LMS sync loop: grades out (AGS) and rosters in (NRPS), off the request path.

It runs beside the mapping worker (a thread of ``masteryhub serve``, or of ``masteryhub
worker``) but is not part of it: the dependency direction is lti_tool -> mappings -> lrs,
so the mapper knows nothing of LMSs, and this loop only *reads* what the mapper wrote.

One pass (``GradeSync.run_once``):

1. **Changes.** The mapper keeps a learner's mastery and credit records of one framework
   in one ``progress`` document, stamped ``updated_at`` when it changes; each record in
   it carries its own change stamp. The pass reads the progress documents stamped after
   its persisted cursor, minus an overlap window (the stamps come from several writers,
   and a document stamped earlier may become visible later), and takes from each the
   records stamped after that same start (``mappings.records.changed_in``). Documents
   seen in the window already are recognised by (id, stamp) and skipped. New or changed
   course memberships (a learner's first launch, a roster import) bring that learner's
   existing records too. Each change becomes queue items (course, LTI user, resource) for
   the courses the learner is an active member of, whose AGS claim allows line items and
   scores, and whose scope includes the competency or credit.
2. **Grades.** Queue items are posted per course (``lti_tool.grades``); unchanged
   values are skipped. A course whose platform fails (token, network, 5xx) is recorded
   in ``lti_sync_failures`` with the error and the next attempt, and retried with
   exponential backoff; its items stay queued. A refusal of one score backs off alone.
3. **Rosters.** Queued roster imports (from instructor launches) run, with the same
   backoff on failure.

A lease (``lti_sync_state``, like the mapping worker's) lets any number of processes run
the loop while one posts; posting is also safe to repeat (same value: skipped; the
platform keeps the newest timestamp).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pymongo import ReturnDocument
from pymongo.database import Database

from lti_tool import grades, roster, services
from lti_tool.courses import scope_of
from lti_tool.models import Course
from lti_tool.services import ServiceError
from mappings import catalog as catalog_module
from mappings import records
from mappings.models import utcnow

log = logging.getLogger(__name__)

STATE = "lti_sync_state"
FAILURES = "lti_sync_failures"
STATE_ID = "lms-sync"
LEASE_SECONDS = 60.0
OVERLAP = dt.timedelta(seconds=10)
CHANGES_PER_PASS = 2000
PAGE = 500
ITEMS_PER_PASS = 1000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# (collection, cursor name). Cursors of other names in a persisted state (the "mastery" and
# "credits" of versions that followed those collections) are dropped: the progress cursor
# then starts at the epoch, and the grades it queues again are skipped as unchanged.
FOLLOWED = ((records.PROGRESS, "progress"), ("lti_memberships", "members"))


class LeaseLost(RuntimeError):
    """Another process runs the sync now."""


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass
class PassResult:
    queued: int = 0
    posted: list[tuple[str, str, str, dict]] = field(default_factory=list)  # course,user,res,value
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (course, error)
    item_failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    rosters: list[roster.RosterResult] = field(default_factory=list)
    roster_failures: list[tuple[str, str]] = field(default_factory=list)
    skipped_courses: list[str] = field(default_factory=list)  # waiting for their retry


def ensure_indexes(db: Database) -> None:
    db[grades.QUEUE].create_index([("next_attempt_at", 1)])
    db[grades.QUEUE].create_index([("course", 1)])
    db[grades.SCORES].create_index([("course", 1)])
    db[roster.QUEUE].create_index([("queued_at", 1)])
    # Followed by the sync like progress.updated_at (indexed by the mapper); memberships
    # change rarely, so the index costs little.
    db["lti_memberships"].create_index([("updated_at", 1)])


class GradeSync:
    """One process's sync loop. ``clock`` and ``backoff`` are injectable for tests."""

    def __init__(self, db: Database, *, name: str | None = None,
                 clock: Callable[[], dt.datetime] = utcnow,
                 backoff: tuple[float, ...] = grades.BACKOFF,
                 overlap: dt.timedelta = OVERLAP, timeout: float = services.TIMEOUT):
        self.db = db
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.backoff = backoff
        self.overlap = overlap
        self.timeout = timeout
        self.state = db[STATE]
        self._catalog: catalog_module.Catalog | None = None
        ensure_indexes(db)

    # -- lease -------------------------------------------------------------------------
    def acquire(self) -> dict | None:
        now = utcnow()
        self.state.update_one({"_id": STATE_ID}, {"$setOnInsert": {"cursors": {}}},
                              upsert=True)
        return self.state.find_one_and_update(
            {"_id": STATE_ID, "$or": [{"holder": self.name}, {"holder": None},
                                      {"holder": {"$exists": False}},
                                      {"lease_until": {"$lt": now}}]},
            {"$set": {"holder": self.name,
                      "lease_until": now + dt.timedelta(seconds=LEASE_SECONDS)}},
            return_document=ReturnDocument.AFTER)

    def check_lease(self) -> None:
        if self.acquire() is None:
            raise LeaseLost(f"{self.name} lost the LMS sync lease")

    def release(self) -> None:
        self.state.update_one({"_id": STATE_ID, "holder": self.name},
                              {"$set": {"holder": None, "lease_until": None}})

    def acquire_waiting(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.acquire() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def catalog(self) -> catalog_module.Catalog:
        version = catalog_module.current_version()
        if self._catalog is None or self._catalog.version != version:
            self._catalog = catalog_module.load()
        return self._catalog

    # -- one pass ----------------------------------------------------------------------
    def run_once(self, *, course: str | None = None) -> PassResult | None:
        """Detect changes, post grades, import queued rosters. ``course`` limits the
        posting to one course and ignores its backoff (an operator's explicit request).
        None when another process holds the lease."""
        state = self.acquire()
        if state is None:
            return None
        result = PassResult()
        result.queued = self.detect_changes(state)
        self.post_grades(result, only=course)
        if course is None:
            self.import_rosters(result)
        return result

    # 1. changes -> queue ---------------------------------------------------------------
    def detect_changes(self, state: dict) -> int:
        followed = {name for _, name in FOLLOWED}
        cursors = {k: v for k, v in (state.get("cursors") or {}).items() if k in followed}
        recent = {k: v for k, v in (state.get("recent") or {}).items() if k in followed}
        if self.db["lti_courses"].find_one({"ags.lineitems": {"$exists": True}},
                                           {"_id": 1}) is None:
            # No course has a gradebook to post to: follow the stamps without reading the
            # records (the mapping worker shares the database; a pass over every changed
            # mastery record would only slow it down).
            now = utcnow()
            self.state.update_one({"_id": STATE_ID, "holder": self.name},
                                  {"$set": {"cursors": {n: now for _, n in FOLLOWED},
                                            "recent": {}, "detected_at": now}})
            return 0
        budget = CHANGES_PER_PASS
        changed: dict[str, list[dict]] = {"mastery": [], "credit": [], "members": []}
        for collection, name in FOLLOWED:
            cursor = _aware(cursors.get(name))
            docs, cursors[name], recent[name] = self._read_changes(
                collection, cursor, recent.get(name) or [], budget)
            budget = max(budget - len(docs), PAGE)
            if collection == records.PROGRESS:
                # The records of a changed document that changed since the same start
                # (a document is rewritten whole; most of its records may be as before).
                start = self._start(cursor)
                for doc in docs:
                    for kind, record in records.changed_in(doc, start):
                        changed[kind].append(record)
            else:
                changed[name].extend(docs)
        items = self._items_for(changed["mastery"], changed["credit"], changed["members"])
        queued = grades.enqueue(self.db, items, self.clock())
        self.state.update_one({"_id": STATE_ID, "holder": self.name},
                              {"$set": {"cursors": cursors, "recent": recent,
                                        "detected_at": utcnow()}})
        return queued

    def _read_changes(self, collection: str, cursor: dt.datetime | None, recent: list[str],
                      budget: int) -> tuple[list[dict], dt.datetime | None, list[str]]:
        """Documents stamped after (cursor - overlap) not seen with the same stamp before.
        Pages by (updated_at, _id) so equal stamps never stall or skip."""
        start = self._start(cursor)
        seen = set(recent)
        out: list[dict] = []
        last: tuple[dt.datetime, str] | None = None
        newest = cursor
        fields = {"learner": 1, "framework": 1, "s": 1, "course": 1, "user": 1,
                  "status": 1, "updated_at": 1}
        same = 0  # records at the last page's final stamp, already read
        while len(out) < budget:
            # A range on the indexed stamp only (SecantusDB scans the whole collection for
            # an $or); records sharing the last stamp are skipped by count.
            query: dict = {"updated_at": {"$gt": start}} if last is None else \
                {"updated_at": {"$gte": last[0]}}
            page = list(self.db[collection].find(query, fields)
                        .sort([("updated_at", 1), ("_id", 1)]).skip(same).limit(PAGE))
            for doc in page:
                stamp = _aware(doc["updated_at"])
                key = f"{doc['_id']}@{stamp.isoformat()}"
                if key not in seen:
                    seen.add(key)
                    out.append(doc)
                if newest is None or stamp > newest:
                    newest = stamp
            if len(page) < PAGE:
                break
            final = page[-1]["updated_at"]
            same = (same if last is not None and last[0] == final else 0) + sum(
                1 for d in page if d["updated_at"] == final)
            last = (final, page[-1]["_id"])
        # Remember only what the next overlap window can show again.
        floor = (newest - self.overlap) if newest else EPOCH
        kept = [k for k in seen
                if dt.datetime.fromisoformat(k.rsplit("@", 1)[1]) > floor]
        return out, newest, sorted(kept)

    def _start(self, cursor: dt.datetime | None) -> dt.datetime:
        """Where a read of changes begins: the cursor minus the overlap window."""
        return (cursor - self.overlap) if cursor else EPOCH

    def _items_for(self, mastery: list[dict], credits: list[dict],
                   members: list[dict]) -> set[tuple[str, str, str | None, str]]:
        if not (mastery or credits or members):
            return set()
        learners = {d["learner"] for d in mastery + credits if d.get("learner")}
        # learner -> [(course, user)]
        memberships: dict[str, list[tuple[str, str]]] = defaultdict(list)
        chunked = sorted(learners)
        for i in range(0, len(chunked), 200):
            for m in self.db["lti_memberships"].find(
                    {"learner": {"$in": chunked[i:i + 200]}, "status": "Active"},
                    {"course": 1, "user": 1, "learner": 1}):
                memberships[m["learner"]].append((m["course"], m["user"]))
        catalog = self.catalog()
        targets_by_course: dict[str, dict[str, grades.Target] | None] = {}

        def targets(course_id: str) -> dict[str, grades.Target] | None:
            if course_id not in targets_by_course:
                course = Course.objects(identifier=course_id).first()
                targets_by_course[course_id] = (grades.targets_of(scope_of(course), catalog)
                                                if grades.can_sync(course) else None)
            return targets_by_course[course_id]

        items: set[tuple[str, str, str | None, str]] = set()

        def add(learner: str, resource: str) -> None:
            for course_id, user in memberships.get(learner, ()):
                found = targets(course_id)
                if found is not None and resource in found:
                    items.add((course_id, user, learner, resource))

        for m in mastery:
            add(m["learner"], m["competency"])
        for c in credits:
            add(c["learner"], grades.resource_of_credit(c["rule"]))
        # A membership that is new or changed: the learner's records so far.
        for member in members:
            if member.get("status", "Active") != "Active":
                continue
            full = self.db["lti_memberships"].find_one({"_id": member["_id"]},
                                                       {"learner": 1})
            learner = (full or {}).get("learner")
            found = targets(member["course"])
            if not learner or found is None:
                continue
            own = records.load(self.db, [learner]).get(learner)
            if own is None:
                continue
            for resource in [*own.mastery, *map(grades.resource_of_credit, own.credits)]:
                if resource in found:
                    items.add((member["course"], member["user"], learner, resource))
        return items

    # 2. queue -> platform ------------------------------------------------------------
    def post_grades(self, result: PassResult, *, only: str | None = None) -> None:
        now = self.clock()
        blocked = set() if only else {
            d["_id"] for d in self.db[FAILURES].find(
                {"kind": "grades", "next_attempt_at": {"$gt": now}}, {"_id": 1})}
        result.skipped_courses = sorted(blocked)
        query: dict = {"next_attempt_at": {"$lte": now}}
        if only:
            query = {"course": only}
        elif blocked:
            query["course"] = {"$nin": sorted(blocked)}
        items = list(self.db[grades.QUEUE].find(query).sort("next_attempt_at", 1)
                     .limit(ITEMS_PER_PASS))
        by_course: dict[str, list[dict]] = defaultdict(list)
        for item in items:
            by_course[item["course"]].append(item)
        # A course that failed but has nothing left to post (its items were dropped, or
        # posted by an operator's run) is not failing any more.
        for doc in self.db[FAILURES].find({"kind": "grades", "next_attempt_at": {"$lte": now}},
                                          {"course": 1}):
            if doc["course"] not in by_course and not self.db[grades.QUEUE].find_one(
                    {"course": doc["course"]}, {"_id": 1}):
                self.db[FAILURES].delete_one({"_id": doc["_id"]})
        catalog = self.catalog()
        for course_id, course_items in sorted(by_course.items()):
            self.check_lease()
            try:
                done = grades.process_course(
                    self.db, course_id, course_items, now=now, catalog=catalog,
                    steps=self.backoff, timeout=self.timeout, check=self.check_lease)
            except ServiceError as exc:
                self._record_failure(course_id, "grades", str(exc), now)
                result.failed.append((course_id, str(exc)))
                continue
            except LeaseLost:
                raise
            except Exception as exc:  # a bug or bad data must not stop other courses
                log.exception("grade sync of %s failed", course_id)
                self._record_failure(course_id, "grades", f"{type(exc).__name__}: {exc}", now)
                result.failed.append((course_id, str(exc)))
                continue
            result.posted.extend((course_id, u, r, v) for u, r, v in done.posted)
            result.unchanged += done.unchanged
            result.item_failures.extend((course_id, u, r, e) for u, r, e in done.failed)
            self._record_success(course_id, "grades", now, posted=len(done.posted))

    def _record_failure(self, course_id: str, kind: str, error: str,
                        now: dt.datetime) -> None:
        doc = self.db[FAILURES].find_one({"_id": self._failure_id(course_id, kind)}) or {}
        attempts = int(doc.get("attempts") or 0) + 1
        self.db[FAILURES].update_one({"_id": self._failure_id(course_id, kind)}, {
            "$set": {"course": course_id, "kind": kind, "attempts": attempts,
                     "last_error": error, "last_attempt_at": now,
                     "next_attempt_at": now + grades.backoff_delay(attempts, self.backoff)},
            "$setOnInsert": {"since": now}}, upsert=True)
        log.warning("LMS %s sync of %s failed (attempt %d): %s", kind, course_id, attempts,
                    error)

    def _record_success(self, course_id: str, kind: str, now: dt.datetime,
                        posted: int = 0) -> None:
        self.db[FAILURES].delete_one({"_id": self._failure_id(course_id, kind)})
        update: dict = {"last_pass_at": now}
        if posted:
            update["last_posted_at"] = now
        self.db[STATE].update_one({"_id": f"course:{course_id}"}, {"$set": update},
                                  upsert=True)

    @staticmethod
    def _failure_id(course_id: str, kind: str) -> str:
        return course_id if kind == "grades" else f"{kind}:{course_id}"

    # 3. rosters ----------------------------------------------------------------------
    def import_rosters(self, result: PassResult) -> None:
        now = self.clock()
        for doc in list(self.db[roster.QUEUE].find(
                {"queued_at": {"$ne": None}, "next_attempt_at": {"$lte": now}}).limit(20)):
            self.check_lease()
            try:
                done = roster.import_roster(doc["_id"], timeout=self.timeout, db=self.db)
            except ServiceError as exc:
                attempts = int(doc.get("attempts") or 0) + 1
                self.db[roster.QUEUE].update_one({"_id": doc["_id"]}, {"$set": {
                    "attempts": attempts, "last_error": str(exc), "last_attempt_at": now,
                    "next_attempt_at": now + grades.backoff_delay(attempts, self.backoff)}})
                result.roster_failures.append((doc["_id"], str(exc)))
                # Also where the status page and /metrics look for failing syncs.
                self._record_failure(doc["_id"], "roster", str(exc), now)
                continue
            self.db[roster.QUEUE].update_one(
                {"_id": doc["_id"], "queued_at": doc["queued_at"]},
                {"$set": {"queued_at": None}})
            self.db[FAILURES].delete_one({"_id": self._failure_id(doc["_id"], "roster")})
            result.rosters.append(done)

    # -- the loop ----------------------------------------------------------------------
    def run_forever(self, stop: threading.Event, *, poll: float = 2.0) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except LeaseLost:
                log.info("LMS sync lease taken over; standing by")
            except Exception:
                log.exception("LMS sync pass failed; retrying")
            stop.wait(poll)
        try:
            self.release()
        except Exception:
            log.warning("could not release the LMS sync lease", exc_info=True)


def run_forever(stop: threading.Event, db: Database, *, poll: float = 2.0) -> None:
    """The sync loop until ``stop`` is set (``masteryhub serve`` / ``masteryhub worker``)."""
    GradeSync(db).run_forever(stop, poll=poll)


def start_thread(db_factory: Callable[[], Database]) -> tuple[threading.Thread,
                                                              threading.Event]:
    stop = threading.Event()

    def run() -> None:
        run_forever(stop, db_factory())

    thread = threading.Thread(target=run, name="lms-sync", daemon=True)
    thread.start()
    return thread, stop


def sync_status(course_id: str, db: Database | None = None) -> dict:
    """What the instructor sees: is the gradebook up to date, and if not, why."""
    from mongoengine.connection import get_db

    db = db if db is not None else get_db()
    course = Course.objects(identifier=course_id).first()
    failure = db[FAILURES].find_one({"_id": course_id})
    queued = db[grades.QUEUE].count_documents({"course": course_id})
    failed_items = [
        {"user": grades.lti_sub(d["user"]), "resource": d["resource"],
         "attempts": d.get("attempts"), "error": d.get("error"),
         "next_attempt_at": d.get("next_attempt_at")}
        for d in db[grades.QUEUE].find({"course": course_id, "attempts": {"$gt": 0}})
        .limit(50)]
    state = db[STATE].find_one({"_id": f"course:{course_id}"}) or {}
    if not grades.can_sync(course):
        status = "unavailable"
    elif failure:
        status = "failing"
    elif failed_items:
        status = "partial"
    elif queued:
        status = "pending"
    else:
        status = "ok"
    return {
        "course": course_id, "status": status,
        "gradebook": bool(grades.can_sync(course)),
        "queued": queued,
        "failure": None if not failure else {
            "error": failure.get("last_error"), "attempts": failure.get("attempts"),
            "since": failure.get("since"), "last_attempt_at": failure.get("last_attempt_at"),
            "next_attempt_at": failure.get("next_attempt_at")},
        "failed_items": failed_items,
        "last_pass_at": state.get("last_pass_at"),
        "last_posted_at": state.get("last_posted_at"),
        "lineitems": db[grades.LINEITEMS].count_documents({"course": course_id}),
        "scores": db[grades.SCORES].count_documents({"course": course_id}),
        "roster": roster.status_of(course_id, db),
    }
