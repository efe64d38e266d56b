"""The mapping worker: follows the LRS statement sequence and keeps competency records current.

Guarantees (DESIGN.md "Data flow"):
- reads only up to the LRS watermark, so a statement whose write finished late is never
  skipped;
- its position is persisted after each batch; a crash re-processes at most one batch, which
  is harmless because processing is idempotent;
- one worker at a time does the work: a lease in ``worker_state`` (renewed every batch,
  taken over when it expires) lets any number of workers run for availability, while
  only the lease holder writes, so two workers never race on the same records;
- derived records follow the catalog: when frameworks, rules or credit rules change (the
  catalog version is bumped), the lease holder compares the catalog's fingerprint with the
  one the records were derived under and, if it differs, works through a persisted job in
  chunks between batches -- map the statements again (when what produces evidence
  changed), then rebuild every learner from their evidence. The job's progress is stored
  after each chunk, so a killed worker's successor resumes it; `recompute` is the same job
  run to the end in the foreground.
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
from mappings.engine import BatchResult, Engine
from mappings.models import ensure_indexes, utcnow

log = logging.getLogger(__name__)

WORKER_ID = "mapper"
#: ``worker_state.checked_upto`` after a restore: every statement may have evidence (from
#: the backup) until a recompute has looked at them all.
CHECK_ALL = 2 ** 62
LEASE_SECONDS = 10.0
# Statements per batch: a learner touched by many statements of a batch costs one evidence
# bucket and one progress write, so catching up goes faster with larger batches. A batch
# of 10,000 takes about 3 s on a 2-core machine, well inside the lease (renewed at the
# start of a batch and again before its records are written).
BATCH = 10000
# Statements per batch that looks up existing evidence first (re-mapping, the checked way):
# each costs more, and a batch must stay well inside the lease.
CHECKED_BATCH = 2000
JOBS = "mapping_jobs"
CATALOG_JOB = "catalog"  # the catalog fingerprint the records follow, and pending work
REBUILD_CHUNK = 200  # learners rebuilt per job step
ALL = "*"  # a dirty-queue entry (learner, ALL): rebuild the whole learner


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
    merges go through here so that only one writer ever updates mastery and credits.
    A pair (learner, ALL) rebuilds all of the learner's records (see Engine.rebuild)."""
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
    def __init__(self, db: Database, *, name: str | None = None, batch: int | None = None):
        self.db = db
        self.store = StatementStore(db)
        self.state = db["worker_state"]
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch = batch or BATCH
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
            self._notice_catalog(self._catalog)
        assert self._engine is not None
        return self._engine

    def drain_dirty(self, limit: int = 1000) -> int:
        """Recompute queued pairs (lease held); a pair queued again meanwhile stays queued."""
        docs = list(self.db["mapping_dirty"].find().limit(limit))
        if not docs:
            return 0
        engine = self.engine()
        whole = {d["learner"] for d in docs if d["competency"] == ALL}
        engine.rebuild(whole)
        engine.recompute({(d["learner"], d["competency"]) for d in docs
                          if d["learner"] not in whole})
        self.db["mapping_dirty"].bulk_write(
            [DeleteOne({"_id": d["_id"], "at": d["at"]}) for d in docs], ordered=False)
        return len(docs)

    # -- catalog changes -------------------------------------------------------------------
    def _notice_catalog(self, catalog: catalog_module.Catalog) -> None:
        """Compare the catalog with the one the records were derived under; on a change,
        schedule the work that brings them in line (run by :meth:`job_step`).

        A catalog bump that changes nothing derived (a learner merge bumps it too) costs
        nothing. The first catalog ever seen is taken as the one the records follow, so
        upgrading does not start a rebuild of its own."""
        fingerprint = catalog.fingerprint()
        jobs = self.db[JOBS]
        doc = jobs.find_one({"_id": CATALOG_JOB})
        if doc is None:
            jobs.update_one({"_id": CATALOG_JOB},
                            {"$setOnInsert": {"fingerprint": fingerprint, "gen": 0}},
                            upsert=True)
            return
        old = doc.get("fingerprint") or {}
        if old == fingerprint:
            return
        update: dict = {"fingerprint": fingerprint, "changed_at": utcnow(),
                        "rebuild": {"learners": None, "after": ""}}
        if old.get("match") != fingerprint["match"]:
            # Statements below the worker's position were mapped under the old catalog;
            # later ones will be mapped under this one.
            position = (self.state.find_one({"_id": WORKER_ID}) or {}).get("position", 0)
            upto = max(position, (doc.get("remap") or {}).get("upto", 0))
            update["remap"] = {"position": 0, "upto": upto}
        log.info("catalog changed (%s); rebuilding derived records in the background",
                 ", ".join(k for k in fingerprint if old.get(k) != fingerprint[k]))
        jobs.update_one({"_id": CATALOG_JOB, "gen": doc.get("gen", 0)},
                        {"$set": update, "$inc": {"gen": 1}})

    def pending_job(self) -> dict | None:
        """The catalog job, if it has work left."""
        doc = self.db[JOBS].find_one({"_id": CATALOG_JOB})
        return doc if doc and (doc.get("remap") or doc.get("rebuild")) else None

    def job_step(self, progress: Callable[[int, int, str], None] | None = None
                 ) -> tuple[str, int] | None:
        """One chunk of the pending catalog job (lease held): map up to a batch of
        statements again, or rebuild up to REBUILD_CHUNK learners. Its progress is stored
        after the chunk (a successor resumes there; a chunk done twice is harmless).
        Returns (what, how many) or None when there is nothing to do."""
        engine = self.engine()  # first: it may schedule a new pass
        doc = self.pending_job()
        if doc is None:
            return None
        jobs, gen = self.db[JOBS], doc.get("gen", 0)
        remap, rebuild = doc.get("remap"), doc.get("rebuild")
        if remap:
            position, upto = remap["position"], remap["upto"]
            if position >= upto:
                jobs.update_one({"_id": CATALOG_JOB, "gen": gen}, {"$set": {"remap": None}})
                return "statements", 0
            upper = min(upto, position + min(self.batch, CHECKED_BATCH))
            read, changed = engine.remap(self.store.statements_in_range(position, upper))
            # Learners the rebuild will not reach get rebuilt through the dirty queue.
            after = (rebuild or {}).get("after", "")
            scope = (rebuild or {}).get("learners")
            left_out = {lr for lr in changed if rebuild is None or lr <= after or
                        (scope is not None and lr not in scope)}
            mark_dirty(self.db, {(lr, ALL) for lr in left_out})
            self.check_lease()
            jobs.update_one({"_id": CATALOG_JOB, "gen": gen},
                            {"$set": {"remap.position": upper}})
            if progress:
                progress(upper, upto, "statements")
            return "statements", read
        after, scope = rebuild.get("after") or "", rebuild.get("learners")
        if scope is None:
            ids = [d["_id"] for d in self.db["learners"].find(
                {"_id": {"$gt": after}}, {"_id": 1}).sort("_id", 1).limit(REBUILD_CHUNK)]
        else:
            ids = sorted(lr for lr in scope if lr > after)[:REBUILD_CHUNK]
        if not ids:
            jobs.update_one({"_id": CATALOG_JOB, "gen": gen}, {"$set": {"rebuild": None}})
            return "learners", 0
        engine.rebuild(ids)  # checks the lease before writing
        jobs.update_one({"_id": CATALOG_JOB, "gen": gen},
                        {"$set": {"rebuild.after": ids[-1]},
                         "$inc": {"rebuild.done": len(ids)}})
        if progress:
            total = len(scope) if scope is not None else \
                self.db["learners"].estimated_document_count()
            progress(rebuild.get("done", 0) + len(ids), total, "learners")
        return "learners", len(ids)

    def run_once(self) -> BatchResult | None:
        """Process the next batch; None when not the lease holder, an empty result when
        there is nothing new."""
        state = self._acquire()
        if state is None:
            return None
        self.engine()  # notices a catalog change
        self.drain_dirty()
        # A chunk of catalog work, if any, between batches: the stream does not stop.
        busy = self.job_step() is not None
        position = state.get("position", 0)
        # A batch cut short (a crash, a lost lease) is done again over exactly the same
        # statements, whatever this worker's batch size: its evidence buckets are named by
        # it, so the same buckets come out (mappings.evidence.insert).
        upper = state.get("batch_upto") or 0
        # Statements that may have evidence already go the checked way (Engine.process):
        # a batch done again, and those below ``checked_upto`` (a restored or upgraded
        # database, statements a recompute mapped ahead of the worker).
        checked = upper > position or position < (state.get("checked_upto") or 0)
        if upper <= position:
            upper = min(self.store.watermark().seq,
                        position + (min(self.batch, CHECKED_BATCH) if checked else self.batch))
            if upper <= position:
                return BatchResult(busy=busy)
            self.state.update_one({"_id": WORKER_ID, "holder": self.name},
                                  {"$set": {"batch_upto": upper}})
        docs = list(self.store.statements_in_range(position, upper))
        result = self.engine().process(docs, checked=checked)
        result.busy = busy
        # Advance only if we still hold the lease: a worker that stalled past its lease
        # must not move the position of the one that took over.
        self.state.update_one({"_id": WORKER_ID, "holder": self.name},
                              {"$set": {"position": upper, "updated_at": utcnow()},
                               "$unset": {"batch_upto": ""}})
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
            if not result or (result.statements < self.batch and not result.busy):
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
              progress: Callable[[int, int, str], None] | None = None) -> int:
    """Rebuild evidence, mastery and credits from the statements up to the watermark,
    through the same engine as incremental processing (so the results are identical).

    Two passes, as the catalog job (:meth:`Worker.job_step`) that it is: map every
    statement again (evidence the rules no longer produce is superseded, teacher decisions
    on evidence still produced are kept), then rebuild each learner from their evidence,
    replacing their records learner by learner. Nothing is deleted up front, so an
    interrupted recompute leaves every learner with either their old records or their new
    ones, and the job stays scheduled: the running worker finishes it, or a re-run resumes
    it where it stopped. Credits keep their history (an award or revocation is an event,
    not a derived value). ``learner`` limits the rebuild to one learner (statements are
    all mapped again: an alias may have moved a statement's evidence to them);
    ``framework`` is accepted for compatibility and rebuilds every learner (a learner's
    credits may span frameworks). ``progress(done, total, what)`` is called after each
    chunk, ``what`` being "statements" or "learners".
    Returns the number of statements read."""
    del framework
    holder = Worker(db, name=f"recompute:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    deadline = time.monotonic() + LEASE_SECONDS * 3
    while holder._acquire() is None:  # the running worker stands by while we rebuild
        if time.monotonic() > deadline:
            raise LeaseLost("a mapping worker holds the lease and does not let go; "
                            "try again, or stop the workers first")
        time.sleep(0.2)
    try:
        holder.engine()  # a catalog change not noticed yet becomes part of the job
        mapped_upto = _schedule_recompute(db, holder, learner)
        done = 0
        while (step := holder.job_step(progress)) is not None:
            if step[0] == "statements":
                done += step[1]
        while holder.drain_dirty():
            pass
        # Every statement up to the watermark has been looked at: after a restore, only
        # those the worker has not reached yet still need the checked way.
        db["worker_state"].update_one({"_id": WORKER_ID, "checked_upto": {"$gte": CHECK_ALL}},
                                      {"$set": {"checked_upto": mapped_upto}})
        return done
    finally:
        holder.release()


def _schedule_recompute(db: Database, holder: Worker, learner: str | None) -> int:
    """Add a recompute to the catalog job: a new pass when none is unfinished, else the
    unfinished one is resumed (its statement range extended to the watermark)."""
    jobs = db[JOBS]
    watermark = holder.store.watermark().seq
    doc = jobs.find_one({"_id": CATALOG_JOB}) or {}
    remap, rebuild = doc.get("remap"), doc.get("rebuild")
    wanted = {"learners": [learner] if learner else None, "after": ""}
    if remap is None and rebuild is None:
        remap, rebuild = {"position": 0, "upto": watermark}, wanted
    else:
        if remap is not None:
            remap["upto"] = max(remap["upto"], watermark)
        if rebuild is None or (learner is None and rebuild.get("learners") is not None):
            rebuild = wanted
        elif learner and rebuild.get("learners") is not None and \
                (learner not in rebuild["learners"] or learner <= rebuild.get("after", "")):
            mark_dirty(db, {(learner, ALL)})
    # The remap may map statements the worker has not reached: it will check them.
    db["worker_state"].update_one({"_id": WORKER_ID}, {"$max": {"checked_upto": watermark}},
                                  upsert=True)
    jobs.update_one({"_id": CATALOG_JOB}, {"$set": {"remap": remap, "rebuild": rebuild},
                                           "$inc": {"gen": 1}}, upsert=True)
    return watermark
