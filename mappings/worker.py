"""The mapping worker: follows the LRS statement sequence and keeps competency records current.

Guarantees (DESIGN.md "Data flow"):
- reads only up to the LRS watermark, so a statement whose write finished late is never
  skipped;
- its position is persisted after each batch; a crash re-processes at most one batch, which
  is harmless because processing is idempotent;
- one worker at a time does the work: a lease in ``worker_state`` (renewed every batch,
  taken over when it expires) lets any number of workers run for availability, while
  only the lease holder writes, so two workers never race on the same records.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pymongo import DeleteOne, ReturnDocument, UpdateOne
from pymongo.database import Database

from lrs.store import StatementStore
from mappings import catalog as catalog_module
from mappings.engine import STATE, BatchResult, Engine
from mappings.models import ensure_indexes, utcnow

log = logging.getLogger(__name__)

WORKER_ID = "mapper"
LEASE_SECONDS = 10.0
BATCH = 2000


@dataclass
class Status:
    position: int
    watermark: int
    lag: int
    holder: str | None
    lease_until: dt.datetime | None


class LeaseLost(RuntimeError):
    """Another worker took over; this one must not write derived records."""


def mark_dirty(db: Database, pairs: set[tuple[str, str]]) -> None:
    """Queue (learner, competency) pairs for the lease holder to recompute: decisions and
    merges go through here so that only one writer ever updates mastery and credits."""
    if not pairs:
        return
    now = utcnow()
    db["mapping_dirty"].bulk_write([
        UpdateOne({"_id": f"{learner}|{competency}"},
                  {"$set": {"learner": learner, "competency": competency, "at": now}},
                  upsert=True) for learner, competency in sorted(pairs)], ordered=False)


def apply_dirty_now(db: Database) -> bool:
    """Recompute queued pairs in this process when no worker holds the lease (a teacher
    sees the effect at once); otherwise the running worker does it on its next poll."""
    worker = Worker(db, name=f"inline:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    if worker._acquire() is None:
        return False
    try:
        worker.drain_dirty()
    finally:
        worker.release()
    return True


class Worker:
    def __init__(self, db: Database, *, name: str | None = None, batch: int = BATCH):
        self.db = db
        self.store = StatementStore(db)
        self.state = db["worker_state"]
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch = batch
        self._catalog: catalog_module.Catalog | None = None
        self._engine: Engine | None = None
        ensure_indexes()

    # -- lease -------------------------------------------------------------------------
    def _acquire(self) -> dict | None:
        """Take or renew the lease; None when another live worker holds it."""
        self._ensure_state()
        now = utcnow()
        return self.state.find_one_and_update(
            {"_id": WORKER_ID, "$or": [{"holder": self.name}, {"holder": None},
                                       {"lease_until": {"$lt": now}},
                                       {"holder": {"$exists": False}}]},
            {"$set": {"holder": self.name,
                      "lease_until": now + dt.timedelta(seconds=LEASE_SECONDS)},
             "$setOnInsert": {"position": 0}},
            upsert=False, return_document=ReturnDocument.AFTER)

    def _ensure_state(self) -> None:
        self.state.update_one({"_id": WORKER_ID}, {"$setOnInsert": {"position": 0}},
                              upsert=True)

    def release(self) -> None:
        self.state.update_one({"_id": WORKER_ID, "holder": self.name},
                              {"$set": {"holder": None, "lease_until": None}})

    # -- work --------------------------------------------------------------------------
    def check_lease(self) -> None:
        """Renew the lease, or raise LeaseLost if another worker holds it now."""
        if self._acquire() is None:
            raise LeaseLost(f"{self.name} lost the mapping lease")

    def engine(self) -> Engine:
        version = catalog_module.current_version()
        if self._catalog is None or self._catalog.version != version:
            self._catalog = catalog_module.load()
            self._engine = Engine(self.db, self._catalog, guard=self.check_lease)
        assert self._engine is not None
        return self._engine

    def drain_dirty(self, limit: int = 1000) -> int:
        """Recompute queued pairs (lease held); a pair queued again meanwhile stays queued."""
        docs = list(self.db["mapping_dirty"].find().limit(limit))
        if not docs:
            return 0
        self.engine().recompute({(d["learner"], d["competency"]) for d in docs})
        self.db["mapping_dirty"].bulk_write(
            [DeleteOne({"_id": d["_id"], "at": d["at"]}) for d in docs], ordered=False)
        return len(docs)

    def run_once(self) -> BatchResult | None:
        """Process the next batch; None when not the lease holder, an empty result when
        there is nothing new."""
        state = self._acquire()
        if state is None:
            return None
        self.drain_dirty()
        position = state.get("position", 0)
        watermark = self.store.watermark().seq
        upper = min(watermark, position + self.batch)
        if upper <= position:
            return BatchResult()
        docs = list(self.store.statements_in_range(position, upper))
        result = self.engine().process(docs)
        # Advance only if we still hold the lease: a worker that stalled past its lease
        # must not move the position of the one that took over.
        self.state.update_one({"_id": WORKER_ID, "holder": self.name},
                              {"$set": {"position": upper, "updated_at": utcnow()}})
        return result

    def run_forever(self, stop: threading.Event, *, poll: float = 0.1,
                    on_batch: Callable[[BatchResult], None] | None = None) -> None:
        """Poll until ``stop`` is set; errors are logged and retried (never fatal)."""
        while not stop.is_set():
            try:
                result = self.run_once()
            except Exception:
                log.exception("mapping batch failed; retrying")
                stop.wait(2.0)
                continue
            if result and result.statements and on_batch:
                on_batch(result)
            if not result or result.statements < self.batch:
                stop.wait(poll)
        try:
            self.release()
        except Exception:
            log.warning("could not release the mapping lease", exc_info=True)


def worker_status_of(db: Database) -> Status:
    """Position, watermark and lag (for /api/worker and operators)."""
    state = db["worker_state"].find_one({"_id": WORKER_ID}) or {}
    watermark = StatementStore(db).watermark().seq
    position = state.get("position", 0)
    return Status(position=position, watermark=watermark, lag=max(0, watermark - position),
                  holder=state.get("holder"), lease_until=state.get("lease_until"))


def start_thread(db_factory: Callable[[], Database]) -> tuple[threading.Thread, threading.Event]:
    """Run a worker in a daemon thread (the embedded default inside `masteryhub serve`)."""
    stop = threading.Event()

    def run() -> None:
        Worker(db_factory()).run_forever(stop)

    thread = threading.Thread(target=run, name="mapping-worker", daemon=True)
    thread.start()
    return thread, stop


def recompute(db: Database, *, learner: str | None = None, framework: str | None = None,
              progress: Callable[[int, int], None] | None = None) -> int:
    """Rebuild evidence and mastery from the statements up to the watermark, through the
    same engine as incremental processing (so the results are identical); credits keep
    their history (an award or revocation is an event, not a derived value).
    Returns the number of statements read."""
    store = StatementStore(db)
    holder = Worker(db, name=f"recompute:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    deadline = time.monotonic() + LEASE_SECONDS * 3
    while holder._acquire() is None:  # the running worker stands by while we rebuild
        if time.monotonic() > deadline:
            raise LeaseLost("a mapping worker holds the lease and does not let go; "
                            "try again, or stop the workers first")
        time.sleep(0.2)
    try:
        return _recompute(db, store, holder, learner=learner, framework=framework,
                          progress=progress)
    finally:
        holder.release()


def _recompute(db: Database, store: StatementStore, holder: Worker, *, learner: str | None,
               framework: str | None, progress: Callable[[int, int], None] | None) -> int:
    engine = Engine(db, catalog_module.load(), guard=holder.check_lease)
    watermark = store.watermark().seq
    query: dict = {}
    if learner:
        query["learner"] = learner
    if framework:
        query["framework"] = framework
    db["mastery"].delete_many(query)
    db[STATE].delete_many(query)  # the engine's states are rebuilt from evidence
    done = 0
    position = 0
    while position < watermark:
        upper = min(watermark, position + BATCH)
        docs = list(store.statements_in_range(position, upper))
        # All statements are re-applied even for a scoped recompute: it is idempotent, and
        # an alias may have moved a statement's evidence to the learner in scope.
        result = engine.process(docs)
        done += result.statements
        position = upper
        if progress:
            progress(position, watermark)
    # Pairs whose evidence is all gone still need a (blank) record: recompute every pair
    # that has any evidence in scope.
    pairs = {(e["learner"], e["competency"]) for e in db["evidence"].find(
        query, {"learner": 1, "competency": 1})}
    engine.recompute(pairs)
    return done
