"""Statements -> evidence -> mastery -> roll-ups -> credit, in batches, with provenance.

Why batches: a worker must keep up with the LRS's ingest rate, and on SecantusDB every
document read or written costs a fraction of a millisecond. So a batch reads with one
chunked query per collection and writes with one bulk write per collection, and a learner
touched by many statements of a batch is recomputed once.

Why one progress document per learner and framework (``progress``, see
``mappings.models.Progress``): recomputing a learner's levels needs the accepted scores of
every competency involved (a roll-up needs its siblings, a credit all of its competencies),
and writing each mastery record and credit as its own document cost more than everything
else together. The document keeps the scores of each competency, the mastery records and
the credits in one binary body: one read and one write per learner and batch; the new
evidence of a batch is merged into the scores in memory. ``evidence`` stays the record of
truth: whenever the scores might be behind it -- evidence seen before (a retried batch),
voiding, a teacher's decision, a merge, no progress stored -- the pairs concerned are read
from ``evidence`` instead.

Why everything is a pure function of the accepted evidence: a derived record that is the
same whether it is computed once, twice, after a crash or by `recompute` is what
idempotency needs. Progress is written after the evidence it counts, so a crash between the
two leaves progress that is behind, and the retried batch (its evidence now already stored)
reads those pairs from ``evidence``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import ciso8601
import orjson
import pymongo
import pymongo.errors
from pymongo.database import Database

from lrs.jsonio import loads_json
from lrs.keys import VOIDED_VERB, ifi
from lrs.store import STATEMENTS
from mappings import calculation, self_report
from mappings import evidence as evidence_store
from mappings.catalog import Catalog
from mappings.evidence import evidence_id
from mappings.identity import IdentityCache
from mappings.models import utcnow
from mappings.records import PROGRESS
from mappings.rules import match_statement

MAPPER = "mapper"
LEGACY_CREDITS = "credits"  # where versions before progress documents kept credits
#: Evidence status of a record the rules no longer produce (see Engine.remap).
SUPERSEDED = "superseded"
_KEPT = ("status", "voided", "actions", "_id")  # what re-mapping never overwrites
CHUNK = 200  # ids per $in: SecantusDB slows down on long $in lists
log = logging.getLogger(__name__)

Score = tuple[int, int, float, str]  # (timestamp in ms since the epoch, LRS seq, points, id)
Pair = tuple[str, str]  # (learner, competency)


def _find_by_ids(collection, ids: Sequence[str], projection: dict | None = None,
                 chunk: int = CHUNK) -> Iterable[dict]:
    """Documents by _id in chunks."""
    for i in range(0, len(ids), chunk):
        yield from collection.find({"_id": {"$in": list(ids[i:i + chunk])}}, projection)


def progress_id(learner: str, framework: str) -> str:
    return f"{learner}|{framework}"


def _timestamp(stmt: dict) -> dt.datetime:
    """The statement's timestamp in UTC; `stored` when the timestamp cannot be expressed in
    UTC (the LRS accepts e.g. 0001-01-01T00:00:00+05:00, which precedes year 1 in UTC)."""
    for value in (stmt.get("timestamp"), stmt.get("stored")):
        if not value:
            continue
        try:
            parsed = ciso8601.parse_datetime(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            parsed = parsed.astimezone(dt.UTC)
        except (ValueError, OverflowError):
            continue
        return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
    return utcnow()


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _ms(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // dt.timedelta(milliseconds=1)


def _from_ms(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=value)


def _agents_of(actor: dict) -> list[dict]:
    if actor.get("objectType") == "Group":
        return list(actor.get("member") or ())
    return [actor]


def _activity(stmt: dict) -> tuple[str | None, str | None]:
    obj = stmt.get("object", {})
    if obj.get("objectType", "Activity") != "Activity":
        return None, None
    names = (obj.get("definition") or {}).get("name") or {}
    name = names.get("en-US") or names.get("en") or next(iter(names.values()), None)
    return obj.get("id"), name


def _score_of(e: dict) -> Score | None:
    """An evidence record's score, or None when it does not count."""
    if e.get("status") != "accepted" or e.get("voided"):
        return None
    overrides = [a["points"] for a in e.get("actions") or ()
                 if a.get("action") == "override" and a.get("points") is not None]
    points = overrides[-1] if overrides else e["points"]
    return (_ms(e["timestamp"]), e["seq"], float(points), e["_id"])


@lru_cache(maxsize=256)
def _method(spec: str) -> calculation.Method:
    return calculation.parse_method(spec)


@dataclass(frozen=True)
class _Scale:
    """A scale as plain values (reading mongoengine fields per record cost more CPU than
    the database writes of a batch)."""

    mastery_points: float
    top_points: float
    levels: tuple[tuple[float, str], ...]  # (points, name), highest first

    @classmethod
    def of(cls, scale) -> _Scale:
        return cls(scale.mastery_points, scale.top_points,
                   tuple(sorted(((lv.points, lv.name) for lv in scale.levels), reverse=True)))

    def level_for(self, points: float) -> str | None:
        for level_points, name in self.levels:
            if points >= level_points - 1e-9:
                return name
        return None


@dataclass(frozen=True)
class _Rule:
    """A credit rule as plain values, read once per catalog (see _Scale)."""

    identifier: str
    framework: str
    competencies: tuple[str, ...]
    required: tuple[str, ...]
    min_percent: float

    @classmethod
    def of(cls, rule) -> _Rule:
        return cls(rule.identifier, rule.framework, tuple(rule.competencies),
                   tuple(rule.required or ()), rule.min_percent)


@dataclass(frozen=True)
class _Meta:
    """What the engine needs of one competency, read once per catalog."""

    framework: str
    scale: _Scale
    method: str
    rolls_up: bool
    ancestors: tuple[str, ...]
    children: tuple[str, ...]


def _insert_new(collection, docs: list[dict]) -> list[dict]:
    """Insert documents with fixed ids; returns those that existed already (a duplicate
    key is expected on re-processing; any other write error is raised)."""
    if not docs:
        return []
    try:
        collection.insert_many(docs, ordered=False)
        return []
    except pymongo.errors.BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        return [docs[e["index"]] for e in errors]


@dataclass
class BatchResult:
    statements: int = 0
    evidence: int = 0
    retracted: int = 0
    pairs: set[tuple[str, str]] = field(default_factory=set)
    credits_changed: list[str] = field(default_factory=list)
    busy: bool = False  # the worker has catalog work left (no pause before the next poll)


@dataclass
class _Plan:
    """The writes one pass derived, made by Engine._commit."""

    writes: list = field(default_factory=list)  # progress documents stored before
    inserts: list[dict] = field(default_factory=list)  # progress documents never stored
    gone: list[str] = field(default_factory=list)  # progress documents left empty
    audits: list[dict] = field(default_factory=list)
    changed_ids: list[str] = field(default_factory=list)  # credits


@dataclass
class _LearnerState:
    """One learner's scores per competency (of the frameworks loaded), the records stored
    for them (``stored``: per framework, the progress body as read, and its bytes) and the
    records derived in this pass (``mastery`` per competency, ``credits`` per rule). A
    competency is present in ``leaves`` once it has any evidence, counted or not (it then
    has a mastery record, possibly without points)."""

    leaves: dict[str, list[Score]] = field(default_factory=dict)
    stored: dict[str, dict] = field(default_factory=dict)
    raw: dict[str, bytes] = field(default_factory=dict)
    mastery: dict[str, dict] = field(default_factory=dict)
    credits: dict[str, dict] = field(default_factory=dict)

    def old_mastery(self, framework: str, competency: str) -> dict | None:
        return (self.stored.get(framework) or {}).get("mastery", {}).get(competency)

    def old_credit(self, framework: str, rule: str) -> dict | None:
        return (self.stored.get(framework) or {}).get("credits", {}).get(rule)


def _stamped(new: dict, old: dict | None, now: int) -> dict:
    """The record with its change time: kept from the stored record when nothing else
    changed, so that followers (the LMS grade sync) see only real changes."""
    if old is not None and {k: v for k, v in old.items() if k != "at"} == new:
        new["at"] = old["at"]
    else:
        new["at"] = now
    return new


def _compact(doc: dict) -> dict:
    """A mastery record as stored in a progress body: the evidence behind it is not kept
    (it is the ids of the leaf's counted scores, or the union of the children's), see
    :mod:`mappings.records`."""
    out = {"points": doc["points"], "level": doc["level"], "mastered": doc["mastered"],
           "method": doc["method"],
           # Which evidence it stands on, in short: new evidence that leaves the level as
           # it was still changes the record (and its stamp; the class view's "newest
           # evidence" relies on a cell's stamp being at least its newest evidence's).
           "ev": hashlib.blake2b(orjson.dumps(doc["evidence"]), digest_size=6).hexdigest()}
    if doc["from_children"]:
        out["children"] = [[c, p, m] for c, p, m, _ in doc["children"]]
    return out


class _Levels:
    """A learner's records computed from their scores, memoised: each competency's
    (points, mastered, evidence ids, document) -- None where there is no record."""

    def __init__(self, engine: Engine, learner: str, state: _LearnerState):
        self.engine = engine
        self.catalog = engine.catalog
        self.learner = learner
        self.state = state
        self._memo: dict[str, dict | None] = {}

    def forget(self, competency: str) -> None:
        self._memo.pop(competency, None)
        for parent in self.engine.meta(competency).ancestors:
            self._memo.pop(parent, None)

    def record(self, competency: str) -> dict | None:
        if competency in self._memo:
            return self._memo[competency]
        self._memo[competency] = doc = self._compute(competency)
        return doc

    def _compute(self, competency: str) -> dict | None:
        catalog, engine = self.catalog, self.engine
        meta = engine.meta(competency)
        if meta.rolls_up:
            children = meta.children
            known = {c: doc for c in children if (doc := self.record(c)) is not None}
            if not known:
                return None
            rule = catalog.competencies[competency].rollup
            states = {child: calculation.ChildState(
                points=known[child]["points"] if child in known else None,
                mastered=bool(known[child]["mastered"]) if child in known else False,
                top_points=engine.meta(child).scale.top_points) for child in children}
            scale = meta.scale
            try:
                points, mastered = calculation.rollup(
                    rule.method, states, required=list(rule.required or ()),
                    points_needed=rule.points, scale=scale)
            except ValueError as exc:
                engine._record_error(f"{self.learner}|{competency}", "rollup", exc)
                return None
            behind = sorted({e for doc in known.values() for e in doc["evidence"]})
            doc = engine._mastery_doc(self.learner, competency, points, scale,
                                      f"rollup:{rule.method}", behind, from_children=True,
                                      mastered=mastered)
            # Sorted so that the record does not depend on the order of processing.
            doc["children"] = sorted([c, d["points"], d["mastered"], d["evidence"]]
                                     for c, d in known.items())
            return doc
        scores = self.state.leaves.get(competency)
        if scores is None:
            return None
        scale, method = meta.scale, meta.method
        try:
            points = calculation.calculate(_method(method), [s[2] for s in scores],
                                           scale.mastery_points)
        except ValueError as exc:
            engine._record_error(f"{self.learner}|{competency}", "mastery", exc)
            return None
        return engine._mastery_doc(self.learner, competency, points, scale, method,
                                   [s[3] for s in scores], from_children=False)


class Engine:
    """Applies stored statements to the competency records."""

    def __init__(self, db: Database, catalog: Catalog,
                 guard: Callable[[], None] | None = None):
        """``guard`` runs right before mastery and credits are written; the worker passes
        a lease check, so a worker that stalled past its lease writes nothing."""
        self.guard = guard
        self.db = db
        self.catalog = catalog
        self.audit = db["audit"]
        self.progress = db[PROGRESS]
        self.statements = db[STATEMENTS]
        self.identities = IdentityCache()
        self._meta: dict[str, _Meta] = {}
        # Frameworks each credit rule's competencies belong to (its records live there).
        self._rule_frameworks = {
            rule.identifier: sorted({catalog.competencies[c].framework
                                     for c in [*rule.competencies, *(rule.required or ())]
                                     if c in catalog.competencies} | {rule.framework})
            for rule in catalog.credit_rules}
        # Where each credit is stored: with its rule's framework.
        self._credit_framework = {rule.identifier: rule.framework
                                  for rule in catalog.credit_rules}
        self._rules = {rule.identifier: _Rule.of(rule) for rule in catalog.credit_rules}
        self._legacy_credits: bool | None = None  # whether an older version's credits exist
        self._rules_by_competency = {
            c: [self._rules[rule.identifier] for rule in rules]
            for c, rules in catalog.credits_by_competency.items()}

    def meta(self, competency: str) -> _Meta:
        meta = self._meta.get(competency)
        if meta is None:
            catalog = self.catalog
            meta = self._meta[competency] = _Meta(
                framework=catalog.competencies[competency].framework,
                scale=_Scale.of(catalog.scale_of(competency)),
                method=catalog.method_of(competency),
                rolls_up=catalog.rolls_up(competency),
                ancestors=tuple(catalog.ancestors(competency)),
                children=tuple(catalog.children.get(competency, ())))
        return meta

    # -- statements -> evidence ---------------------------------------------------------
    def drafts_for(self, stmt: dict, provider: str | None):
        return match_statement(stmt, self.catalog.rulesets, self.catalog.infos,
                               provider=provider) + \
            self_report.drafts(stmt, self.catalog.infos, provider)

    def _evidence_of(self, docs: Iterable[dict], result: BatchResult
                     ) -> tuple[list[dict], list[tuple[str, dict | None]], set[str]]:
        """The evidence records a batch of statements produces under the catalog, the
        statements it voids (with their actor when known), and the statements that could
        not be mapped."""
        ops: list[dict] = []
        voided_targets: list[tuple[str, dict | None]] = []
        failed: set[str] = set()
        matched: list[tuple[dict, dict, str | None, list]] = []
        for doc in docs:
            result.statements += 1
            if doc.get("vb"):
                stmt = loads_json(doc["j"])
                voided_targets.append((stmt["object"]["id"].lower(), None))
                continue
            if doc.get("v"):
                # Voided before we saw it: retract, if any.
                voided_targets.append((doc["sid"], loads_json(doc["j"]).get("actor")))
                continue
            try:
                stmt = loads_json(doc["j"])
                if stmt["verb"]["id"] == VOIDED_VERB:
                    continue
                provider = ((stmt.get("authority") or {}).get("account") or {}).get("name")
                drafts = self.drafts_for(stmt, provider)
            except Exception as exc:
                self._record_error(doc["sid"], "statement", exc)
                failed.add(doc["sid"])
                continue
            if drafts:
                matched.append((doc, stmt, provider, drafts))
        self.identities.prefetch(
            (ifi(agent), agent.get("name")) for _, stmt, _, _ in matched
            for agent in _agents_of(stmt["actor"]) if ifi(agent))
        for doc, stmt, provider, drafts in matched:
            learners = self.identities.learners_of(stmt["actor"])
            when = _timestamp(stmt)
            activity, activity_name = _activity(stmt)
            for learner in learners:
                for draft in drafts:
                    key = evidence_id(doc["sid"], learner, draft.competency, draft.rule)
                    framework = self.catalog.infos[draft.competency].framework
                    ops.append({"_id": key, "statement": doc["sid"], "seq": doc["_id"],
                                "learner": learner, "competency": draft.competency,
                                "framework": framework, "rule": draft.rule,
                                "points": float(draft.points), "source_type": draft.source_type,
                                "timestamp": when, "activity": activity,
                                "activity_name": activity_name, "provider": provider,
                                "status": "pending" if draft.review else "accepted",
                                "voided": False, "actions": []})
                    result.pairs.add((learner, draft.competency))
        return ops, voided_targets, failed

    def process(self, docs: Iterable[dict], *, checked: bool = False) -> BatchResult:
        """Apply a batch of LRS statement documents (as stored, in sequence order).

        ``checked``: the statements may have evidence already (a batch done again, a
        database restored or upgraded, statements a recompute mapped ahead of the worker):
        their evidence is looked up first (as re-mapping does, :meth:`remap`) and their
        learners are rebuilt, so nothing is stored twice. Otherwise the new evidence is
        inserted without looking, which is what makes the worker fast.

        Why the evidence is inserted in a thread: the database works on the insert while
        this process computes the records (two cores, two processes). The records are
        computed from the scores as stored plus the batch's new evidence; should the insert
        find evidence stored before (a retried batch, whose records may hold a teacher's
        decision), they are computed again from what is stored."""
        docs = list(docs)
        if checked:
            return self._process_checked(docs)
        result = BatchResult()
        # Names the batch's evidence buckets: the same statements give the same buckets.
        batch = min((d["_id"] for d in docs), default=0)
        ops, voided_targets, _ = self._evidence_of(docs, result)
        result.evidence = len(ops)
        new: dict[Pair, list[dict]] = defaultdict(list)
        for op in ops:
            new[(op["learner"], op["competency"])].append(op)
        if voided_targets or not ops:
            stale = self._write_evidence(ops, batch) if ops else set()
            if voided_targets:
                retracted = self._retract(voided_targets)
                result.retracted = len(retracted)
                stale |= retracted
                result.pairs |= retracted
            result.credits_changed = self.recompute(result.pairs, new=new, stale=stale)
            return result
        gathered = self._gather(result.pairs, new=new, stale=set())
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence") as pool:
            inserted = pool.submit(self._write_evidence, ops, batch)
            try:
                plan = self._derive(*gathered)
            finally:
                stale = inserted.result()
        if stale:
            plan = self._derive(*self._gather(result.pairs, new=new, stale=stale))
        result.credits_changed = self._commit(plan)
        return result

    def _process_checked(self, docs: list[dict]) -> BatchResult:
        result = BatchResult(statements=len(docs))
        _, changed = self.remap(docs, retract_all=True)
        learners = set(changed)
        for doc in docs:
            stmt = loads_json(doc["j"])
            if not doc.get("vb"):
                learners.update(self.identities.known_learners_of(stmt.get("actor") or {}))
        result.credits_changed = self.rebuild(learners)
        return result

    # -- the catalog changed: map again, rebuild ---------------------------------------
    def remap(self, docs: Iterable[dict], *, retract_all: bool = False
              ) -> tuple[int, set[str]]:
        """Map statements again under the current catalog, writing evidence only: evidence
        the rules now produce and that is missing is added; evidence whose (statement,
        learner, competency, rule) they no longer produce is marked ``superseded`` (kept
        for provenance, its previous status in ``superseded_status``; it no longer counts);
        superseded evidence produced again gets its status back. Evidence still produced
        keeps the teacher's decisions; without any, its status follows the rule (a rule
        that now asks for review makes it pending). Statements that could not be mapped
        leave their evidence alone. ``retract_all``: report the learners of every voided
        statement's evidence, not only of evidence marked voided now.

        Mastery and credits are not touched: returns (statements read, learners whose
        evidence changed), and the caller rebuilds those learners (:meth:`rebuild`)."""
        result = BatchResult()
        docs = list(docs)
        ops, voided_targets, failed = self._evidence_of(docs, result)
        # Learners this created may have evidence stored below that no progress counts yet.
        self.identities.created.difference_update(op["learner"] for op in ops)
        wanted = {op["_id"]: op for op in ops}
        mapped = [d for d in docs
                  if not d.get("vb") and not d.get("v") and d["sid"] not in failed]
        existing = {e["_id"]: e for e in self._evidence_of_statements(
            [(d["sid"], loads_json(d["j"]).get("actor")) for d in mapped])}
        changed: set[str] = set()
        inserts = []
        # id -> (status and number of decisions as read, fields to set, fields to unset)
        updates: dict[str, tuple[str | None, int, dict, set[str]]] = {}
        now = utcnow()
        for key, op in wanted.items():
            e = existing.get(key)
            if e is None:
                inserts.append(op)
                changed.add(op["learner"])
                continue
            update = {k: v for k, v in op.items()
                      if k not in _KEPT and _plain(e.get(k)) != _plain(v)}
            decided = bool(e.get("actions"))
            unset: set[str] = set()
            if e.get("status") == SUPERSEDED:
                update["status"] = (e.get("superseded_status") if decided else None) \
                    or op["status"]
                unset = {"superseded_status", "superseded_at"}
            elif e.get("status") != op["status"] and not decided:
                update["status"] = op["status"]
            if update or unset:
                updates[key] = (e.get("status"), len(e.get("actions") or ()), update, unset)
        for key, e in existing.items():
            if key not in wanted and e.get("status") != SUPERSEDED:
                updates[key] = (e.get("status"), len(e.get("actions") or ()), {
                    "status": SUPERSEDED, "superseded_status": e.get("status"),
                    "superseded_at": now}, set())
        if inserts:
            batch = min(d["_id"] for d in docs)
            changed |= {lr for lr, _ in self._write_evidence(inserts, batch, "r")}
        if updates:
            def apply(record: dict) -> dict | None:
                status, decisions, update, unset = updates[record["_id"]]
                if record.get("status") != status or \
                        len(record.get("actions") or ()) != decisions:
                    # A teacher's decision made meanwhile wins (the evidence is
                    # superseded by the next recompute instead).
                    return None
                out = {k: v for k, v in record.items() if k not in unset}
                out.update(update)
                return out

            learners = {existing[k]["learner"] for k in updates}
            changed |= {after["learner"] for _, after in evidence_store.change(
                self.db, learners, apply, ids=updates)}
        if voided_targets:
            retracted = self._retract(voided_targets, only_new=not retract_all)
            changed |= {lr for lr, _ in retracted}
        return result.statements, changed

    def rebuild(self, learners: Iterable[str]) -> list[str]:
        """Recompute these learners' records from all of their evidence and replace what
        is stored: mastery records no longer produced (a competency removed, a roll-up
        switched off, evidence superseded) are dropped, credits are evaluated for every
        rule that uses their competencies and for every credit they already hold (a rule
        that changed). The same function of the evidence as incremental processing, so a
        learner rebuilt equals one processed statement by statement. Returns changed
        credit ids."""
        learners = sorted(set(learners))
        if not learners:
            return []
        catalog = self.catalog
        wanted = {(lr, fw) for lr in learners for fw in catalog.frameworks}
        states = self._read_stored(wanted)
        for lr in learners:
            states[lr].leaves = {}
        for e in evidence_store.of_learners(self.db, learners):
            competency = e["competency"]
            if e.get("status") == SUPERSEDED or competency not in catalog.competencies:
                continue
            scores = states[e["learner"]].leaves.setdefault(competency, [])
            if (score := _score_of(e)) is not None:
                scores.append(score)
        rules = self._rules
        affected: set[Pair] = set()
        touched: dict[tuple[str, str], object] = {}
        for lr in learners:
            state = states[lr]
            for scores in state.leaves.values():
                scores.sort()
            for c in state.leaves:
                affected.update((lr, x) for x in (c, *self.meta(c).ancestors))
            for body in state.stored.values():
                for rule_id in body.get("credits", {}):
                    if rule_id in rules:
                        touched[(lr, rule_id)] = rules[rule_id]
        for lr, c in affected:
            for rule in self._rules_by_competency.get(c, ()):
                touched[(lr, rule.identifier)] = rule
        return self._commit(self._derive(states, affected, touched, wanted, replace=True))

    def _record_error(self, subject: str, kind: str, exc: Exception) -> None:
        """Keep what could not be mapped, for admins (`/api/worker`), and move on."""
        log.warning("mapping skipped %s %s: %s", kind, subject, exc)
        self.db["mapping_errors"].update_one(
            {"_id": f"{kind}|{subject}"},
            {"$set": {"kind": kind, "subject": subject, "error": f"{type(exc).__name__}: {exc}",
                      "at": utcnow()}}, upsert=True)

    def _write_evidence(self, docs: list[dict], batch: int, suffix: str = "") -> set[Pair]:
        """Insert new evidence (``mappings.evidence``: one bucket per learner and batch);
        evidence seen before (re-processing after a crash, or a recompute) is updated
        instead, keeping its status and the teacher's decisions. Returns the pairs that had
        evidence seen before: what is stored for them is what counts, so they are read
        back."""
        seen = evidence_store.insert(self.db, docs, batch=batch, suffix=suffix)
        if not seen:
            return set()
        ours = {d["_id"]: d for d in docs}
        stale = {e["_id"]: {k: v for k, v in ours[e["_id"]].items()
                            if k not in _KEPT and _plain(e.get(k)) != _plain(v)}
                 for e in seen}
        stale = {k: v for k, v in stale.items() if v}
        if stale:
            evidence_store.change(self.db, {ours[k]["learner"] for k in stale},
                                  lambda r: dict(r, **stale[r["_id"]]), ids=stale)
        return {(d["learner"], d["competency"]) for d in seen}

    def _evidence_of_statements(self, statements: list[tuple[str, dict | None]]
                                ) -> list[dict]:
        """The evidence of these statements (id, actor if known), found through their
        learners: evidence is stored and indexed by learner."""
        actors = {sid: actor for sid, actor in statements if actor}
        unknown = sorted({sid for sid, actor in statements if not actor})
        for i in range(0, len(unknown), CHUNK):
            for doc in self.statements.find({"sid": {"$in": unknown[i:i + CHUNK]}},
                                            {"sid": 1, "j": 1}):
                actors[doc["sid"]] = loads_json(doc["j"]).get("actor") or {}
        wanted: set[tuple[str, str]] = set()
        for sid, actor in actors.items():
            wanted.update((lr, sid) for lr in self.identities.known_learners_of(actor))
        if not wanted:
            return []
        return [e for e in evidence_store.of_learners(
                    self.db, {lr for lr, _ in wanted}, statements={s for _, s in wanted})
                if (e["learner"], e["statement"]) in wanted]

    def _retract(self, statements: list[tuple[str, dict | None]], *,
                 only_new: bool = False) -> set[Pair]:
        """A voided statement's evidence stops counting (kept, marked, for the record).
        ``only_new``: report only evidence not marked before (a retried batch must
        recompute all of it, since its records may not have been written)."""
        found = self._evidence_of_statements(statements)
        if not found:
            return set()
        ids = {e["_id"] for e in found}
        marked = evidence_store.change(
            self.db, {e["learner"] for e in found},
            lambda r: None if r.get("voided") else dict(r, voided=True), ids=ids)
        affected = [after for _, after in marked] if only_new else found
        return {(e["learner"], e["competency"]) for e in affected}

    # -- evidence -> mastery -> roll-ups -> credit ------------------------------------
    def recompute(self, pairs: set[Pair], *, new: dict[Pair, list[dict]] | None = None,
                  stale: set[Pair] | None = None) -> list[str]:
        """Recompute mastery for the given (learner, competency) pairs, their ancestors'
        roll-ups and the credits that use any of them; returns changed credit ids.

        ``new`` is a batch's new evidence per pair, merged into the learners' scores in
        memory; the pairs in ``stale`` -- and, when ``new`` is not given, all pairs
        (teacher decisions, merges, `recompute`) -- are read from ``evidence``."""
        return self._commit(self._derive(*self._gather(pairs, new=new, stale=stale)))

    def _gather(self, pairs: set[Pair], *, new: dict[Pair, list[dict]] | None,
                stale: set[Pair] | None) -> tuple:
        """What deriving the records of these pairs needs, read from the database: the
        learners' stored progress and scores, and which records and credits to derive."""
        catalog = self.catalog
        pairs = {(lr, c) for lr, c in pairs if c in catalog.competencies}
        new = new or {}
        stale = set(pairs) if not new else {p for p in (stale or ()) if p in pairs}
        wanted: set[tuple[str, str]] = {(lr, self.meta(c).framework) for lr, c in pairs}
        for lr, c in pairs:
            for comp in (c, *self.meta(c).ancestors):
                for rule in self._rules_by_competency.get(comp, ()):
                    wanted.update((lr, fw) for fw in self._rule_frameworks[rule.identifier])
        states = self._read_stored(wanted)
        # Frameworks with nothing stored are read from evidence -- except for learners this
        # engine created: all of their evidence is from its own batches, each of which
        # wrote their progress, or is retried (its evidence then found stale).
        fresh = {(lr, fw) for lr, fw in wanted
                 if fw not in states[lr].raw and lr not in self.identities.created}
        self._leaves_from_evidence(fresh, states)
        self._read_pairs({p for p in stale
                          if (p[0], self.meta(p[1]).framework) not in fresh}, states)
        # New evidence not read already (by id) joins the scores.
        for pair in pairs - stale:
            learner, competency = pair
            scores = states[learner].leaves.setdefault(competency, [])
            have = {s[3] for s in scores}
            added = [s for e in new.get(pair, ()) if (s := _score_of(e)) and s[3] not in have]
            if added:
                scores.extend(added)
                scores.sort()
        affected = set(pairs)
        # A framework with nothing stored gets all of its records, not only these.
        affected.update((lr, c) for lr, fw in fresh for c in states[lr].leaves
                        if self.meta(c).framework == fw)
        for learner, competency in list(affected):
            affected.update((learner, p) for p in self.meta(competency).ancestors)
        touched = {(lr, rule.identifier): rule for lr, c in affected
                   for rule in self._rules_by_competency.get(c, ())}
        return states, affected, touched, wanted

    def _derive(self, states: dict[str, _LearnerState], affected: set[Pair], touched: dict,
                wanted: set[tuple[str, str]], *, replace: bool = False) -> _Plan:
        """Compute the affected mastery records and the touched credits from the learners'
        scores, and the writes of the progress documents of ``wanted`` (learner,
        framework) that change. ``replace``: the records computed are all there are (a
        rebuild); otherwise records not computed are kept as stored."""
        now = _ms(utcnow())
        levels = {lr: _Levels(self, lr, states[lr]) for lr in states}
        for learner, competency in sorted(affected):
            doc = levels[learner].record(competency)
            if doc is None:
                continue
            state = states[learner]
            framework = self.meta(competency).framework
            state.mastery[competency] = _stamped(
                _compact(doc), state.old_mastery(framework, competency), now)
        plan = _Plan()
        plan.audits, plan.changed_ids = self._credits(touched, levels, states, now)
        for learner, framework in sorted(wanted):
            state = states[learner]
            stored = state.stored.get(framework) or {}
            mastery = {} if replace else dict(stored.get("mastery") or {})
            mastery.update((c, r) for c, r in state.mastery.items()
                           if self.meta(c).framework == framework)
            credits = dict(stored.get("credits") or {})
            credits.update((r, c) for r, c in state.credits.items()
                           if self._credit_framework[r] == framework)
            leaves = {c: s for c, s in state.leaves.items()
                      if self.meta(c).framework == framework}
            key = progress_id(learner, framework)
            if not (leaves or mastery or credits):
                if framework in state.raw:
                    plan.gone.append(key)
                continue
            raw = orjson.dumps({"leaves": leaves, "mastery": mastery, "credits": credits},
                               option=orjson.OPT_SORT_KEYS)
            if raw == state.raw.get(framework):
                continue
            doc = {"_id": key, "learner": learner, "framework": framework,
                   "updated_at": _from_ms(now), "s": raw}
            if framework in state.raw:
                plan.writes.append(pymongo.ReplaceOne({"_id": key}, doc))
            else:  # an insert costs the database a third of a replace
                plan.inserts.append(doc)
        return plan

    def _commit(self, plan: _Plan) -> list[str]:
        """Write what was derived (after the lease check); returns changed credit ids."""
        if self.guard is not None and (plan.writes or plan.inserts or plan.gone or
                                       plan.audits):
            self.guard()
        if plan.audits:
            # Before the credits: a retried batch finds the old credit, makes the same
            # audit records (same ids) again, and they are kept once.
            _insert_new(self.audit, plan.audits)
        # Stored meanwhile after all (a batch done again after a crash): replaced instead.
        writes = plan.writes + [pymongo.ReplaceOne({"_id": d["_id"]}, d, upsert=True)
                                for d in _insert_new(self.progress, plan.inserts)]
        if writes:
            self.progress.bulk_write(writes, ordered=False)
        for i in range(0, len(plan.gone), CHUNK):
            self.progress.delete_many({"_id": {"$in": plan.gone[i:i + CHUNK]}})
        return plan.changed_ids

    def _read_stored(self, wanted: set[tuple[str, str]]) -> dict[str, _LearnerState]:
        """The learners' stored progress for these frameworks: scores and records."""
        states: dict[str, _LearnerState] = defaultdict(_LearnerState)
        for doc in _find_by_ids(self.progress,
                                sorted(progress_id(lr, fw) for lr, fw in wanted)):
            body = orjson.loads(doc["s"])
            state = states[doc["learner"]]
            state.stored[doc["framework"]] = body
            state.raw[doc["framework"]] = doc["s"]
            state.leaves.update({c: [tuple(s) for s in scores]
                                 for c, scores in body["leaves"].items()
                                 if c in self.catalog.competencies})
        for lr, _ in wanted:
            states.setdefault(lr, _LearnerState())  # a learner with nothing stored yet
        self._seed_legacy_credits(states, {(lr, fw) for lr, fw in wanted
                                           if fw not in states[lr].raw})
        return states

    def _seed_legacy_credits(self, states: dict[str, _LearnerState],
                             missing: set[tuple[str, str]]) -> None:
        """A database written before progress documents keeps its credits in ``credits``:
        a learner's first progress document takes their history from there (status,
        award and revocation dates, the count that numbers the audit records), so an
        upgrade neither forgets a revocation nor reuses audit ids."""
        if not missing:
            return
        if self._legacy_credits is None:
            self._legacy_credits = LEGACY_CREDITS in self.db.list_collection_names()
        if not self._legacy_credits:
            return
        learners = sorted({lr for lr, _ in missing})
        for i in range(0, len(learners), CHUNK):
            for c in self.db[LEGACY_CREDITS].find({"learner": {"$in": learners[i:i + CHUNK]}}):
                framework = self._credit_framework.get(c.get("rule"))
                if (c["learner"], framework) not in missing:
                    continue
                body = states[c["learner"]].stored.setdefault(
                    framework, {"leaves": {}, "mastery": {}, "credits": {}})
                body.setdefault("credits", {})[c["rule"]] = {
                    "status": c.get("status") or "in_progress",
                    "mastered": list(c.get("mastered") or ()),
                    "missing": list(c.get("missing") or ()),
                    "percent": c.get("percent") or 0.0,
                    "awarded_at": _ms(c["awarded_at"]) if c.get("awarded_at") else None,
                    "revoked_at": _ms(c["revoked_at"]) if c.get("revoked_at") else None,
                    "transitions": c.get("transitions") or 0,
                    "at": _ms(c.get("updated_at") or utcnow())}

    def _leaves_from_evidence(self, missing: set[tuple[str, str]],
                              states: dict[str, _LearnerState]) -> None:
        """Scores of frameworks with no progress stored (a learner's first evidence there,
        or a database written by an older version), from all of their evidence."""
        by_learner: dict[str, set[str]] = defaultdict(set)
        for lr, fw in missing:
            by_learner[lr].add(fw)
        touched: set[tuple[str, str]] = set()
        for e in evidence_store.of_learners(self.db, by_learner) if by_learner else ():
            competency = e["competency"]
            info = self.catalog.competencies.get(competency)
            if info is None or info.framework not in by_learner[e["learner"]] or \
                    e.get("status") == SUPERSEDED:
                continue
            scores = states[e["learner"]].leaves.setdefault(competency, [])
            touched.add((e["learner"], competency))
            if (score := _score_of(e)) is not None:
                scores.append(score)
        for lr, c in touched:
            states[lr].leaves[c].sort()

    def _read_pairs(self, pairs: set[Pair], states: dict[str, _LearnerState]) -> None:
        """Replace these pairs' scores with what ``evidence`` holds."""
        if not pairs:
            return
        by_learner: dict[str, set[str]] = defaultdict(set)
        for lr, c in pairs:
            by_learner[lr].add(c)
            states[lr].leaves[c] = []
        competencies = {c for cs in by_learner.values() for c in cs}
        for e in evidence_store.of_learners(self.db, by_learner, competencies):
            if e["competency"] in by_learner[e["learner"]] and \
                    (score := _score_of(e)) is not None:
                states[e["learner"]].leaves[e["competency"]].append(score)
        for lr, c in pairs:
            states[lr].leaves[c].sort()

    def _mastery_doc(self, learner: str, competency: str, points: float | None, scale,
                     method: str, evidence: list[str], *, from_children: bool,
                     mastered: bool | None = None) -> dict:
        level = scale.level_for(points) if points is not None else None
        if mastered is None:
            mastered = calculation.is_mastered(points, scale.mastery_points)
        return {"_id": f"{learner}|{competency}", "learner": learner,
                "competency": competency, "framework": self.meta(competency).framework,
                "points": points, "level": level,
                "mastered": bool(mastered), "method": method, "evidence": evidence,
                "from_children": from_children}

    # -- credits -----------------------------------------------------------------------
    def _credits(self, touched: dict, levels: dict[str, _Levels],
                 states: dict[str, _LearnerState], now: int) -> tuple[list[dict], list[str]]:
        """Evaluate the touched credits into the learners' states (``credits``); returns
        the audit records of awards and revocations and the ids of changed credits."""
        audits, changed_ids = [], []
        candidates_of: dict[str, set[str]] = {}
        for (learner, rule_id), rule in sorted(touched.items()):
            key = f"{learner}|{rule_id}"
            state = states[learner]
            old = state.old_credit(rule.framework, rule_id)
            mine = levels.get(learner) or _Levels(self, learner, state)
            # Only a competency with evidence under it can be mastered.
            candidates = candidates_of.get(learner)
            if candidates is None:
                candidates = candidates_of[learner] = set(state.leaves).union(
                    *(self.meta(c).ancestors for c in state.leaves))
            mastered = {c for c in candidates.intersection(
                            [*rule.competencies, *rule.required])
                        if (doc := mine.record(c)) and doc["mastered"]}
            try:
                progress = calculation.evaluate_credit(list(rule.competencies), mastered,
                                                       required=list(rule.required),
                                                       min_percent=rule.min_percent)
            except ValueError as exc:
                self._record_error(key, "credit", exc)
                continue
            transitions = (old or {}).get("transitions", 0)
            doc = {"mastered": list(progress.mastered), "missing": list(progress.missing),
                   "percent": progress.percent,
                   "awarded_at": old.get("awarded_at") if old else None,
                   "revoked_at": old.get("revoked_at") if old else None,
                   "transitions": transitions}
            was_awarded = bool(old and old.get("status") == "awarded")
            if progress.awarded:
                doc["status"] = "awarded"
                # Dated by the evidence that completed it, in timestamp order: a pure
                # function of the evidence, whatever the batches and whenever noticed.
                since = self._awarded_since(learner, rule, state)
                doc["awarded_at"] = _ms(since) if since is not None else None
                if not was_awarded:
                    doc["revoked_at"] = None
                    doc["transitions"] = transitions + 1
                    audits.append({"_id": f"{key}|{transitions + 1}|credit_awarded",
                                   "at": _from_ms(now), "actor": MAPPER,
                                   "action": "credit_awarded", "subject": key, "detail": {
                                       "rule": rule_id, "percent": progress.percent,
                                       "mastered": list(progress.mastered)}})
            elif was_awarded:
                doc["status"] = "revoked"
                doc["revoked_at"] = now
                doc["transitions"] = transitions + 1
                audits.append({"_id": f"{key}|{transitions + 1}|credit_revoked",
                               "at": _from_ms(now), "actor": MAPPER,
                               "action": "credit_revoked", "subject": key,
                               "detail": {"rule": rule_id, "percent": progress.percent,
                                          "missing": list(progress.missing),
                                          "missing_required": list(progress.missing_required)}})
            else:
                doc["status"] = "revoked" if old and old.get("status") == "revoked" \
                    else "in_progress"
            state.credits[rule_id] = _stamped(doc, old, now)
            if old is None or doc["at"] != old.get("at"):
                changed_ids.append(key)
        return audits, changed_ids

    def _awarded_since(self, learner: str, rule: _Rule, state: _LearnerState
                       ) -> dt.datetime | None:
        """When the credit last became awarded, replaying the learner's counted evidence in
        timestamp order (evidence with the same timestamp together)."""
        scope = set(rule.competencies) | set(rule.required or ())
        relevant = [c for c in state.leaves
                    if c in scope or scope.intersection(self.meta(c).ancestors)]
        events = sorted((s, c) for c in relevant for s in state.leaves[c])
        replay = _Levels(self, learner, _LearnerState())
        competencies = list(rule.competencies)
        required = list(rule.required or ())
        since: int | None = None
        i = 0
        while i < len(events):
            moment = events[i][0][0]
            while i < len(events) and events[i][0][0] == moment:
                score, c = events[i]
                replay.state.leaves.setdefault(c, []).append(score)
                replay.forget(c)
                i += 1
            mastered = {c for c in scope if (doc := replay.record(c)) and doc["mastered"]}
            awarded = calculation.evaluate_credit(competencies, mastered, required=required,
                                                  min_percent=rule.min_percent).awarded
            if awarded and since is None:
                since = moment
            elif not awarded:
                since = None
        return _from_ms(since) if since is not None else None


def _plain(value):
    """Comparable across a database round trip (stored datetimes come back in UTC)."""
    if isinstance(value, dt.datetime):
        return _ms(value)
    return value
