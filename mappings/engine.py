"""Statements -> evidence -> mastery -> roll-ups -> credit, in batches, with provenance.

Why batches: a worker must keep up with the LRS's ingest rate, and on SecantusDB every
document read or written costs a fraction of a millisecond. So a batch reads with one
chunked query per collection and writes with one bulk write per collection, and a learner
touched by many statements of a batch is recomputed once.

Why a per-learner engine state (``mapping_state``): recomputing a learner's levels needs the
accepted scores of every competency involved (a roll-up needs its siblings, a credit all of
its competencies). Reading them back from ``evidence`` cost more than everything else
together. The state keeps, per learner and framework, the accepted scores of each competency
in one binary field (one cheap read and write per learner and batch); the new evidence of a
batch is merged into it in memory. ``evidence`` stays the record of truth: whenever the state
might be behind it -- evidence seen before (a retried batch), voiding, a teacher's decision,
a merge, a missing state -- the pairs concerned are read from ``evidence`` instead.

Why everything is a pure function of the accepted evidence: a derived record that is the
same whether it is computed once, twice, after a crash or by `recompute` is what
idempotency needs. The state is written after the records it describes, so a crash between
the two leaves a state that is behind, and the retried batch (its evidence now already
stored) reads those pairs from ``evidence``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import ciso8601
import orjson
import pymongo
import pymongo.errors
from pymongo.database import Database

from lrs.jsonio import loads_json
from lrs.keys import VOIDED_VERB, ifi
from mappings import calculation, self_report
from mappings.catalog import Catalog
from mappings.identity import IdentityCache
from mappings.models import utcnow
from mappings.rules import match_statement

MAPPER = "mapper"
STATE = "mapping_state"
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


def evidence_id(statement: str, learner: str, competency: str, rule: str) -> str:
    return f"{statement}|{learner}|{competency}|{rule}"


def state_id(learner: str, framework: str) -> str:
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


def _digest(doc: dict) -> str:
    """What a record says (not when it was written), to skip rewriting unchanged records."""
    body = {k: v for k, v in doc.items() if k != "updated_at"}
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
                           digest_size=8).hexdigest()


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
class _LearnerState:
    """One learner's scores per competency (of the frameworks loaded), and the digests of
    the records last written from them. A competency is present once it has any evidence,
    counted or not (it then has a mastery record, possibly without points)."""

    leaves: dict[str, list[Score]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)


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
        self.evidence = db["evidence"]
        self.mastery = db["mastery"]
        self.credits = db["credits"]
        self.audit = db["audit"]
        self.states = db[STATE]
        self.identities = IdentityCache()
        self._meta: dict[str, _Meta] = {}
        # Frameworks each credit rule's competencies belong to (its records live there).
        self._rule_frameworks = {
            rule.identifier: sorted({catalog.competencies[c].framework
                                     for c in [*rule.competencies, *(rule.required or ())]
                                     if c in catalog.competencies} | {rule.framework})
            for rule in catalog.credit_rules}

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
                     ) -> tuple[list[dict], list[str], set[str]]:
        """The evidence records a batch of statements produces under the catalog, the
        statements it voids, and the statements that could not be mapped."""
        ops: list[dict] = []
        voided_targets: list[str] = []
        failed: set[str] = set()
        matched: list[tuple[dict, dict, str | None, list]] = []
        for doc in docs:
            result.statements += 1
            if doc.get("vb"):
                stmt = loads_json(doc["j"])
                voided_targets.append(stmt["object"]["id"].lower())
                continue
            if doc.get("v"):
                voided_targets.append(doc["sid"])  # voided before we saw it: retract, if any
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

    def process(self, docs: Iterable[dict]) -> BatchResult:
        """Apply a batch of LRS statement documents (as stored, in sequence order)."""
        result = BatchResult()
        ops, voided_targets, _ = self._evidence_of(docs, result)
        stale: set[Pair] = set()
        if ops:
            stale |= self._write_evidence(ops)
            result.evidence = len(ops)
        if voided_targets:
            retracted = self._retract(voided_targets)
            result.retracted = len(retracted)
            stale |= retracted
            result.pairs |= retracted
        if result.pairs:
            new: dict[Pair, list[dict]] = defaultdict(list)
            for op in ops:
                new[(op["learner"], op["competency"])].append(op)
            result.credits_changed = self.recompute(result.pairs, new=new, stale=stale)
        return result

    # -- the catalog changed: map again, rebuild ---------------------------------------
    def remap(self, docs: Iterable[dict]) -> tuple[int, set[str]]:
        """Map statements again under the current catalog, writing evidence only: evidence
        the rules now produce and that is missing is added; evidence whose (statement,
        learner, competency, rule) they no longer produce is marked ``superseded`` (kept
        for provenance, its previous status in ``superseded_status``; it no longer counts);
        superseded evidence produced again gets its status back. Evidence still produced
        keeps the teacher's decisions; without any, its status follows the rule (a rule
        that now asks for review makes it pending). Statements that could not be mapped
        leave their evidence alone.

        Mastery and credits are not touched: returns (statements read, learners whose
        evidence changed), and the caller rebuilds those learners (:meth:`rebuild`)."""
        result = BatchResult()
        docs = list(docs)
        ops, voided_targets, failed = self._evidence_of(docs, result)
        wanted = {op["_id"]: op for op in ops}
        sids = [d["sid"] for d in docs
                if not d.get("vb") and not d.get("v") and d["sid"] not in failed]
        existing: dict[str, dict] = {}
        for i in range(0, len(sids), CHUNK):
            for e in self.evidence.find({"statement": {"$in": sids[i:i + CHUNK]}}):
                existing[e["_id"]] = e
        changed: set[str] = set()
        inserts, writes = [], []
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
            op_filter = {"_id": key, "status": e.get("status")}
            change: dict = {}
            if e.get("status") == SUPERSEDED:
                update["status"] = (e.get("superseded_status") if decided else None) \
                    or op["status"]
                change["$unset"] = {"superseded_status": "", "superseded_at": ""}
            elif e.get("status") != op["status"] and not decided:
                update["status"] = op["status"]
            if update:
                change["$set"] = update
            if change:
                writes.append(pymongo.UpdateOne(op_filter, change))
                changed.add(op["learner"])
        for key, e in existing.items():
            if key not in wanted and e.get("status") != SUPERSEDED:
                # Conditional on the status read: a teacher's decision made meanwhile wins
                # (the evidence is superseded by the next recompute instead).
                writes.append(pymongo.UpdateOne(
                    {"_id": key, "status": e.get("status")},
                    {"$set": {"status": SUPERSEDED, "superseded_status": e.get("status"),
                              "superseded_at": now}}))
                changed.add(e["learner"])
        if inserts:
            changed |= {lr for lr, _ in self._write_evidence(inserts)}
        if writes:
            self.evidence.bulk_write(writes, ordered=False)
        if voided_targets:
            retracted = self._retract(voided_targets, only_new=True)
            changed |= {lr for lr, _ in retracted}
        return result.statements, changed

    def rebuild(self, learners: Iterable[str]) -> list[str]:
        """Recompute these learners' records from all of their evidence and replace what
        is stored: mastery records no longer produced (a competency removed, a roll-up
        switched off, evidence superseded) are deleted, unchanged ones are not rewritten,
        credits are evaluated for every rule that uses their competencies and for every
        credit they already hold (a rule that changed), and their engine states are
        replaced. The same function of the evidence as incremental processing, so a
        learner rebuilt equals one processed statement by statement. Returns changed
        credit ids."""
        learners = sorted(set(learners))
        if not learners:
            return []
        catalog = self.catalog
        states = {lr: _LearnerState() for lr in learners}
        for i in range(0, len(learners), CHUNK):
            for e in self.evidence.find({"learner": {"$in": learners[i:i + CHUNK]}},
                                        {"learner": 1, "competency": 1, "timestamp": 1,
                                         "seq": 1, "points": 1, "actions": 1, "status": 1,
                                         "voided": 1}):
                competency = e["competency"]
                if e.get("status") == SUPERSEDED or competency not in catalog.competencies:
                    continue
                scores = states[e["learner"]].leaves.setdefault(competency, [])
                if (score := _score_of(e)) is not None:
                    scores.append(score)
        for state in states.values():
            for scores in state.leaves.values():
                scores.sort()
        levels = {lr: _Levels(self, lr, states[lr]) for lr in learners}
        produced: dict[str, dict] = {}
        touched: dict[tuple[str, str], object] = {}
        for lr in learners:
            competencies = set(states[lr].leaves)
            for c in list(competencies):
                competencies.update(self.meta(c).ancestors)
            for c in sorted(competencies):
                for rule in catalog.credits_by_competency.get(c, ()):
                    touched[(lr, rule.identifier)] = rule
                doc = levels[lr].record(c)
                if doc is not None:
                    produced[doc["_id"]] = doc
                    states[lr].digests[c] = _digest(doc)
        rules = {r.identifier: r for r in catalog.credit_rules}
        writes: list = []
        seen: set[str] = set()
        for i in range(0, len(learners), CHUNK):
            chunk = learners[i:i + CHUNK]
            for old in self.mastery.find({"learner": {"$in": chunk}}):
                seen.add(old["_id"])
                doc = produced.get(old["_id"])
                if doc is None:
                    writes.append(pymongo.DeleteOne({"_id": old["_id"]}))
                elif _digest(old) != _digest(doc):
                    writes.append(pymongo.ReplaceOne({"_id": doc["_id"]}, doc))
            for credit in self.credits.find({"learner": {"$in": chunk}},
                                            {"learner": 1, "rule": 1}):
                if credit.get("rule") in rules:
                    touched[(credit["learner"], credit["rule"])] = rules[credit["rule"]]
        writes += [pymongo.ReplaceOne({"_id": key}, doc, upsert=True)
                   for key, doc in produced.items() if key not in seen]
        credit_writes, audits, changed_ids = self._credits(touched, levels, states)
        if self.guard is not None:
            self.guard()
        if writes:
            self.mastery.bulk_write(writes, ordered=False)
        if audits:
            _insert_new(self.audit, audits)
        if credit_writes:
            self.credits.bulk_write(credit_writes, ordered=False)
        kept = {state_id(lr, self.meta(c).framework)
                for lr in learners for c in states[lr].leaves}
        gone = [state_id(lr, fw) for lr in learners for fw in catalog.frameworks
                if state_id(lr, fw) not in kept]
        for i in range(0, len(gone), CHUNK):
            self.states.delete_many({"_id": {"$in": gone[i:i + CHUNK]}})
        self._save_states(states, set(learners))
        return changed_ids

    def _record_error(self, subject: str, kind: str, exc: Exception) -> None:
        """Keep what could not be mapped, for admins (`/api/worker`), and move on."""
        log.warning("mapping skipped %s %s: %s", kind, subject, exc)
        self.db["mapping_errors"].update_one(
            {"_id": f"{kind}|{subject}"},
            {"$set": {"kind": kind, "subject": subject, "error": f"{type(exc).__name__}: {exc}",
                      "at": utcnow()}}, upsert=True)

    def _write_evidence(self, docs: list[dict]) -> set[Pair]:
        """Insert new evidence; evidence seen before (re-processing after a crash, or a
        recompute) is updated instead, keeping its status and the teacher's decisions.
        Why not upsert everything: an insert costs SecantusDB half what an upsert does,
        and evidence is nearly always new. Returns the pairs that had evidence seen
        before: what is stored for them is what counts, so they are read back."""
        seen = _insert_new(self.evidence, docs)
        if not seen:
            return set()
        self.evidence.bulk_write([
            pymongo.UpdateOne({"_id": d["_id"]},
                              {"$set": {k: v for k, v in d.items() if k not in _KEPT}})
            for d in seen], ordered=False)
        return {(d["learner"], d["competency"]) for d in seen}

    def _retract(self, statement_ids: list[str], *, only_new: bool = False) -> set[Pair]:
        """A voided statement's evidence stops counting (kept, marked, for the record).
        ``only_new``: report only evidence not marked before (a retried batch must
        recompute all of it, since its records may not have been written)."""
        query: dict = {"statement": {"$in": statement_ids}}
        if only_new:
            query["voided"] = {"$ne": True}
        affected = list(self.evidence.find(query, {"learner": 1, "competency": 1}))
        if not affected:
            return set()
        self.evidence.update_many(query, {"$set": {"voided": True}})
        return {(e["learner"], e["competency"]) for e in affected}

    # -- evidence -> mastery -> roll-ups -> credit ------------------------------------
    def recompute(self, pairs: set[Pair], *, new: dict[Pair, list[dict]] | None = None,
                  stale: set[Pair] | None = None) -> list[str]:
        """Recompute mastery for the given (learner, competency) pairs, their ancestors'
        roll-ups and the credits that use any of them; returns changed credit ids.

        ``new`` is a batch's freshly inserted evidence per pair, merged into the learners'
        states in memory; the pairs in ``stale`` -- and, when ``new`` is not given, all
        pairs (teacher decisions, merges, `recompute`) -- are read from ``evidence``."""
        catalog = self.catalog
        pairs = {(lr, c) for lr, c in pairs if c in catalog.competencies}
        if not pairs:
            return []
        new = new or {}
        stale = set(pairs) if not new else {p for p in (stale or ()) if p in pairs}
        touched = {(lr, rule.identifier): rule for lr, c in pairs
                   for comp in (c, *self.meta(c).ancestors)
                   for rule in catalog.credits_by_competency.get(comp, ())}
        wanted: set[tuple[str, str]] = {(lr, self.meta(c).framework)
                                        for lr, c in pairs}
        for lr, rule_id in touched:
            wanted.update((lr, fw) for fw in self._rule_frameworks.get(rule_id, ()))
        states, fresh = self._load_states(wanted)
        # Pairs of a learner whose state had to be built from evidence are read, not merged.
        forced = {p for p in pairs
                  if (p[0], self.meta(p[1]).framework) in fresh} | stale
        self._read_pairs({p for p in stale
                          if (p[0], self.meta(p[1]).framework) not in fresh},
                         states)
        for pair in pairs - forced:
            learner, competency = pair
            scores = states[learner].leaves.setdefault(competency, [])
            have = {s[3] for s in scores}
            added = [s for e in new.get(pair, ()) if (s := _score_of(e)) and s[3] not in have]
            if added:
                scores.extend(added)
                scores.sort()

        levels = {lr: _Levels(self, lr, states[lr]) for lr in {lr for lr, _ in pairs}}
        affected = set(pairs)
        for learner, competency in pairs:
            affected.update((learner, p) for p in self.meta(competency).ancestors)
        inserts, writes = [], []
        for learner, competency in sorted(affected):
            doc = levels[learner].record(competency)
            if doc is None:
                continue
            digest = _digest(doc)
            known = states[learner].digests
            if (learner, competency) not in forced and known.get(competency) == digest:
                continue
            if competency not in known and \
                    (learner, self.meta(competency).framework) not in fresh:
                inserts.append(doc)  # never written: an insert costs a third of a replace
            else:
                writes.append(pymongo.ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
            known[competency] = digest
        credit_writes, audits, changed_ids = self._credits(touched, levels, states)
        if self.guard is not None:
            self.guard()
        if inserts:
            self._insert_or_replace(self.mastery, inserts)
        if writes:
            self.mastery.bulk_write(writes, ordered=False)
        if audits:
            # Before the credits: a retried batch finds the old credit, makes the same
            # audit records (same ids) again, and they are kept once.
            _insert_new(self.audit, audits)
        if credit_writes:
            self.credits.bulk_write(credit_writes, ordered=False)
        # Last: a state is never ahead of the records it describes.
        self._save_states(states, {lr for lr, _ in wanted})
        return changed_ids

    @staticmethod
    def _insert_or_replace(collection, docs: list[dict]) -> None:
        """Insert records believed new; any that exists after all (a batch retried after
        its records were written, before its state was) is replaced."""
        seen = _insert_new(collection, docs)
        if not seen:
            return
        collection.bulk_write([pymongo.ReplaceOne({"_id": d["_id"]}, d, upsert=True)
                               for d in seen], ordered=False)

    def _load_states(self, wanted: set[tuple[str, str]]
                     ) -> tuple[dict[str, _LearnerState], set[tuple[str, str]]]:
        """The learners' states for these frameworks; those never stored (new learners,
        or after `recompute`) are built from all of the learner's evidence there."""
        states: dict[str, _LearnerState] = defaultdict(_LearnerState)
        found = set()
        for doc in _find_by_ids(self.states, sorted(state_id(lr, fw) for lr, fw in wanted)):
            found.add((doc["learner"], doc["framework"]))
            body = orjson.loads(doc["s"])
            state = states[doc["learner"]]
            state.leaves.update({c: [tuple(s) for s in scores]
                                 for c, scores in body["leaves"].items()
                                 if c in self.catalog.competencies})
            state.digests.update(body["digests"])
        missing = wanted - found
        by_learner: dict[str, set[str]] = defaultdict(set)
        for lr, fw in missing:
            by_learner[lr].add(fw)
            states.setdefault(lr, _LearnerState())  # a learner without evidence yet
        learners = sorted(by_learner)
        for i in range(0, len(learners), CHUNK):
            for e in self.evidence.find({"learner": {"$in": learners[i:i + CHUNK]}},
                                        {"learner": 1, "competency": 1, "framework": 1,
                                         "timestamp": 1, "seq": 1, "points": 1,
                                         "actions": 1, "status": 1, "voided": 1}):
                competency = e["competency"]
                info = self.catalog.competencies.get(competency)
                if info is None or info.framework not in by_learner[e["learner"]] or \
                        e.get("status") == SUPERSEDED:
                    continue
                scores = states[e["learner"]].leaves.setdefault(competency, [])
                if (score := _score_of(e)) is not None:
                    scores.append(score)
        for lr in learners:
            for scores in states[lr].leaves.values():
                scores.sort()
        return states, missing

    def _read_pairs(self, pairs: set[Pair], states: dict[str, _LearnerState]) -> None:
        """Replace these pairs' scores with what ``evidence`` holds."""
        if not pairs:
            return
        by_learner: dict[str, set[str]] = defaultdict(set)
        for lr, c in pairs:
            by_learner[lr].add(c)
            states[lr].leaves[c] = []
        learners = sorted(by_learner)
        for i in range(0, len(learners), CHUNK):
            chunk = learners[i:i + CHUNK]
            competencies = sorted({c for lr in chunk for c in by_learner[lr]})
            for e in self.evidence.find(
                    {"learner": {"$in": chunk}, "competency": {"$in": competencies}},
                    {"learner": 1, "competency": 1, "timestamp": 1, "seq": 1, "points": 1,
                     "actions": 1, "status": 1, "voided": 1}):
                if e["competency"] in by_learner[e["learner"]] and \
                        (score := _score_of(e)) is not None:
                    states[e["learner"]].leaves[e["competency"]].append(score)
        for lr, c in pairs:
            states[lr].leaves[c].sort()

    def _save_states(self, states: dict[str, _LearnerState], learners: set[str]) -> None:
        writes = []
        for learner in sorted(learners):
            state = states[learner]
            by_framework: dict[str, dict] = defaultdict(lambda: {"leaves": {}, "digests": {}})
            for c, scores in state.leaves.items():
                info = self.catalog.competencies.get(c)
                if info is not None:
                    by_framework[info.framework]["leaves"][c] = scores
            for c, digest in state.digests.items():
                info = self.catalog.competencies.get(c)
                if info is not None:
                    by_framework[info.framework]["digests"][c] = digest
            for framework, body in by_framework.items():
                key = state_id(learner, framework)
                writes.append(pymongo.ReplaceOne(
                    {"_id": key}, {"learner": learner, "framework": framework,
                                   "s": orjson.dumps(body)}, upsert=True))
        if writes:
            self.states.bulk_write(writes, ordered=False)

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
                "from_children": from_children, "updated_at": utcnow()}

    # -- credits -----------------------------------------------------------------------
    def _credits(self, touched: dict, levels: dict[str, _Levels],
                 states: dict[str, _LearnerState]) -> tuple[list, list[dict], list[str]]:
        if not touched:
            return [], [], []
        existing = {d["_id"]: d for d in _find_by_ids(
            self.credits, sorted(f"{lr}|{r}" for lr, r in touched))}
        writes, audits, changed_ids = [], [], []
        candidates_of: dict[str, set[str]] = {}
        for (learner, rule_id), rule in sorted(touched.items()):
            key = f"{learner}|{rule_id}"
            old = existing.get(key)
            mine = levels.get(learner) or _Levels(self, learner, states[learner])
            # Only a competency with evidence under it can be mastered.
            candidates = candidates_of.get(learner)
            if candidates is None:
                candidates = candidates_of[learner] = set(states[learner].leaves).union(
                    *(self.meta(c).ancestors for c in states[learner].leaves))
            records = {c: mine.record(c) for c in
                       candidates.intersection([*rule.competencies, *(rule.required or ())])}
            mastered = {c for c, doc in records.items() if doc and doc["mastered"]}
            try:
                progress = calculation.evaluate_credit(list(rule.competencies), mastered,
                                                       required=list(rule.required or ()),
                                                       min_percent=rule.min_percent)
            except ValueError as exc:
                self._record_error(f"{learner}|{rule_id}", "credit", exc)
                continue
            # Pairs, not a dict: identifiers may contain dots.
            evidence_by = [[c, list(records[c]["evidence"]) if records.get(c) else []]
                           for c in progress.mastered]
            behind = sorted({e for _, ids in evidence_by for e in ids})
            transitions = (old or {}).get("transitions", 0)
            doc = {"_id": key, "learner": learner, "rule": rule_id,
                   "mastered": list(progress.mastered), "missing": list(progress.missing),
                   "percent": progress.percent, "evidence": behind,
                   "evidence_by": evidence_by,
                   "awarded_at": old.get("awarded_at") if old else None,
                   "revoked_at": old.get("revoked_at") if old else None,
                   "transitions": transitions}
            was_awarded = bool(old and old.get("status") == "awarded")
            if progress.awarded:
                doc["status"] = "awarded"
                # Dated by the evidence that completed it, in timestamp order: a pure
                # function of the evidence, whatever the batches and whenever noticed.
                doc["awarded_at"] = self._awarded_since(learner, rule, states[learner])
                if not was_awarded:
                    doc["revoked_at"] = None
                    doc["transitions"] = transitions + 1
                    audits.append({"_id": f"{key}|{transitions + 1}|credit_awarded",
                                   "at": utcnow(), "actor": MAPPER, "action": "credit_awarded",
                                   "subject": key, "detail": {
                                       "rule": rule_id, "percent": progress.percent,
                                       "mastered": list(progress.mastered)}})
            elif was_awarded:
                doc["status"] = "revoked"
                doc["revoked_at"] = utcnow()
                doc["transitions"] = transitions + 1
                audits.append({"_id": f"{key}|{transitions + 1}|credit_revoked",
                               "at": doc["revoked_at"], "actor": MAPPER,
                               "action": "credit_revoked", "subject": key,
                               "detail": {"rule": rule_id, "percent": progress.percent,
                                          "missing": list(progress.missing),
                                          "missing_required": list(progress.missing_required)}})
            else:
                doc["status"] = "revoked" if old and old.get("status") == "revoked" \
                    else "in_progress"
            if old is None or any(_plain(old.get(k)) != _plain(doc.get(k)) for k in doc):
                doc["updated_at"] = utcnow()
                writes.append(pymongo.ReplaceOne({"_id": key}, doc, upsert=True))
                changed_ids.append(key)
        return writes, audits, changed_ids

    def _awarded_since(self, learner: str, rule, state: _LearnerState) -> dt.datetime | None:
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
