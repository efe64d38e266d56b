"""Statements -> evidence -> mastery -> roll-ups -> credit, in batches, with provenance.

Why batches: a worker must keep up with the LRS's ingest rate. Per statement it would take
several database round trips; per batch it takes about six whatever the batch size
(evidence upserts, the affected learners' evidence and mastery, credit states, writes).

Why everything is recomputed from evidence rather than updated incrementally: a derived
record that is a pure function of the accepted evidence is the same whether it is computed
once, twice, after a crash or by `recompute` — which is what idempotency needs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import ciso8601
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
log = logging.getLogger(__name__)


def _find_by_ids(collection, ids: list[str], chunk: int = 200) -> Iterable[dict]:
    """Documents by _id in chunks (SecantusDB slows down on long $in lists)."""
    for i in range(0, len(ids), chunk):
        yield from collection.find({"_id": {"$in": ids[i:i + chunk]}})


def evidence_id(statement: str, learner: str, competency: str, rule: str) -> str:
    return f"{statement}|{learner}|{competency}|{rule}"


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


@dataclass
class BatchResult:
    statements: int = 0
    evidence: int = 0
    retracted: int = 0
    pairs: set[tuple[str, str]] = field(default_factory=set)
    credits_changed: list[str] = field(default_factory=list)


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
        self.identities = IdentityCache()

    # -- statements -> evidence ---------------------------------------------------------
    def drafts_for(self, stmt: dict, provider: str | None):
        return match_statement(stmt, self.catalog.rulesets, self.catalog.infos,
                               provider=provider) + \
            self_report.drafts(stmt, self.catalog.infos, provider)

    def process(self, docs: Iterable[dict]) -> BatchResult:
        """Apply a batch of LRS statement documents (as stored, in sequence order)."""
        result = BatchResult()
        ops: list[dict] = []
        voided_targets: list[str] = []
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
        if ops:
            self._write_evidence(ops)
            result.evidence = len(ops)
        if voided_targets:
            result.retracted = self._retract(voided_targets, result.pairs)
        if result.pairs:
            result.credits_changed = self.recompute(result.pairs)
        return result

    def _record_error(self, subject: str, kind: str, exc: Exception) -> None:
        """Keep what could not be mapped, for admins (`/api/worker`), and move on."""
        log.warning("mapping skipped %s %s: %s", kind, subject, exc)
        self.db["mapping_errors"].update_one(
            {"_id": f"{kind}|{subject}"},
            {"$set": {"kind": kind, "subject": subject, "error": f"{type(exc).__name__}: {exc}",
                      "at": utcnow()}}, upsert=True)

    def _write_evidence(self, docs: list[dict]) -> None:
        """Insert new evidence; evidence seen before (re-processing after a crash, or a
        recompute) is updated instead, keeping its status and the teacher's decisions.
        Why not upsert everything: an insert costs SecantusDB half what an upsert does,
        and evidence is nearly always new."""
        try:
            self.evidence.insert_many(docs, ordered=False)
            return
        except pymongo.errors.BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            seen = [docs[e["index"]] for e in errors]
        kept = ("status", "voided", "actions", "_id")
        self.evidence.bulk_write([
            pymongo.UpdateOne({"_id": d["_id"]},
                              {"$set": {k: v for k, v in d.items() if k not in kept}})
            for d in seen], ordered=False)

    def _retract(self, statement_ids: list[str], pairs: set[tuple[str, str]]) -> int:
        """A voided statement's evidence stops counting (kept, marked, for the record)."""
        affected = list(self.evidence.find({"statement": {"$in": statement_ids}},
                                           {"learner": 1, "competency": 1}))
        if not affected:
            return 0
        self.evidence.update_many({"statement": {"$in": statement_ids}},
                                  {"$set": {"voided": True}})
        pairs.update((e["learner"], e["competency"]) for e in affected)
        return len(affected)

    # -- evidence -> mastery -> roll-ups -> credit ------------------------------------
    def recompute(self, pairs: set[tuple[str, str]]) -> list[str]:
        """Recompute mastery for the given (learner, competency) pairs, their ancestors'
        roll-ups and the credits that use any of them; returns changed credit ids."""
        catalog = self.catalog
        pairs = {(lr, c) for lr, c in pairs if c in catalog.competencies}
        if not pairs:
            return []
        learners = sorted({lr for lr, _ in pairs})
        competencies = sorted({c for _, c in pairs})
        scores: dict[tuple[str, str], list[tuple[dt.datetime, int, float, str]]] = \
            defaultdict(list)
        for e in self.evidence.find(
                {"learner": {"$in": learners}, "competency": {"$in": competencies},
                 "status": "accepted", "voided": False},
                {"learner": 1, "competency": 1, "timestamp": 1, "seq": 1, "points": 1,
                 "actions": 1}):
            key = (e["learner"], e["competency"])
            if key in pairs:
                overrides = [a["points"] for a in e.get("actions") or ()
                             if a.get("action") == "override" and a.get("points") is not None]
                points = overrides[-1] if overrides else e["points"]
                scores[key].append((e["timestamp"], e["seq"], points, e["_id"]))

        # Read only the records this batch needs: the pairs and their ancestors. A parent
        # keeps its children's states, and a credit its mastered list, so siblings and a
        # learner's other records are never read.
        needed = set(pairs)
        for learner, competency in pairs:
            needed.update((learner, parent) for parent in catalog.ancestors(competency))
        current = {(m["learner"], m["competency"]): m for m in _find_by_ids(
            self.mastery, [f"{lr}|{c}" for lr, c in needed])}
        changed: dict[tuple[str, str], dict] = {}
        for key in pairs:
            learner, competency = key
            if catalog.rolls_up(competency):
                continue
            items = sorted(scores.get(key, ()), key=lambda item: (item[0], item[1]))
            scale = catalog.scale_of(competency)
            method = catalog.method_of(competency)
            try:
                points = calculation.calculate(method, [i[2] for i in items],
                                               scale.mastery_points)
            except ValueError as exc:
                self._record_error(f"{learner}|{competency}", "mastery", exc)
                continue
            changed[key] = self._mastery_doc(learner, competency, points, scale, method,
                                             [i[3] for i in items], from_children=False)
            current[key] = changed[key]

        # Roll-ups, nearest parents first, so grandparents see their updated children.
        parents = sorted({(lr, p) for lr, c in pairs for p in catalog.ancestors(c)},
                         key=lambda lp: len(catalog.ancestors(lp[1])), reverse=True)
        for learner, parent in parents:
            if not catalog.rolls_up(parent):
                continue
            rule = catalog.competencies[parent].rollup
            known = {c: (p, m, ev) for c, p, m, ev in
                     (current.get((learner, parent)) or {}).get("children", ())}
            for child in catalog.children.get(parent, ()):
                doc = changed.get((learner, child))
                if doc is not None:
                    known[child] = (doc["points"], doc["mastered"], doc["evidence"])
            states = {child: calculation.ChildState(
                points=known[child][0] if child in known else None,
                mastered=bool(known[child][1]) if child in known else False,
                top_points=catalog.scale_of(child).top_points)
                for child in catalog.children.get(parent, ())}
            scale = catalog.scale_of(parent)
            try:
                points, mastered = calculation.rollup(
                    rule.method, states, required=list(rule.required or ()),
                    points_needed=rule.points, scale=scale)
            except ValueError as exc:
                self._record_error(f"{learner}|{parent}", "rollup", exc)
                continue
            behind = sorted({e for child in states for e in known.get(child, (0, 0, ()))[2]})
            doc = self._mastery_doc(learner, parent, points, scale, f"rollup:{rule.method}",
                                    behind, from_children=True, mastered=mastered)
            # Sorted so that the record does not depend on the order of processing.
            doc["children"] = sorted([c, *known[c]] for c in known
                                     if c in catalog.children.get(parent, ()))
            changed[(learner, parent)] = doc
            current[(learner, parent)] = doc

        writes = [pymongo.ReplaceOne({"_id": d["_id"]}, d, upsert=True)
                  for d in changed.values()]
        if self.guard is not None:
            self.guard()
        if writes:
            self.mastery.bulk_write(writes, ordered=False)
        return self._update_credits(changed, current)

    def _mastery_doc(self, learner: str, competency: str, points: float | None, scale,
                     method: str, evidence: list[str], *, from_children: bool,
                     mastered: bool | None = None) -> dict:
        level = scale.level_for(points) if points is not None else None
        if mastered is None:
            mastered = calculation.is_mastered(points, scale.mastery_points)
        return {"_id": f"{learner}|{competency}", "learner": learner,
                "competency": competency,
                "framework": self.catalog.competencies[competency].framework,
                "points": points, "level": level.name if level else None,
                "mastered": bool(mastered), "method": method, "evidence": evidence,
                "from_children": from_children, "updated_at": utcnow()}

    def _update_credits(self, changed: dict[tuple[str, str], dict],
                        current: dict[tuple[str, str], dict]) -> list[str]:
        catalog = self.catalog
        touched = {(lr, rule.identifier): rule for (lr, c) in changed
                   for rule in catalog.credits_by_competency.get(c, ())}
        if not touched:
            return []
        existing = {d["_id"]: d for d in self.credits.find(
            {"_id": {"$in": [f"{lr}|{r}" for lr, r in touched]}})}
        writes, audits, changed_ids = [], [], []
        evidence_times: dict[str, dt.datetime] = {}
        for (learner, rule_id), rule in sorted(touched.items()):
            key = f"{learner}|{rule_id}"
            old = existing.get(key)
            # The credit keeps its mastered list; only this batch's changes update it, so
            # a learner's other mastery records need not be read.
            mastered = set(old["mastered"]) if old else set()
            for c in rule.competencies:
                if (learner, c) in changed:
                    if changed[(learner, c)]["mastered"]:
                        mastered.add(c)
                    else:
                        mastered.discard(c)
            try:
                progress = calculation.evaluate_credit(list(rule.competencies), mastered,
                                                       required=list(rule.required or ()),
                                                       min_percent=rule.min_percent)
            except ValueError as exc:
                self._record_error(f"{learner}|{rule_id}", "credit", exc)
                continue
            evidence_by = self._credit_evidence(old, changed, learner, progress.mastered)
            behind = sorted({e for _, ids in evidence_by for e in ids})
            doc = {"_id": key, "learner": learner, "rule": rule_id,
                   "mastered": list(progress.mastered), "missing": list(progress.missing),
                   "percent": progress.percent, "evidence": behind,
                   "evidence_by": evidence_by,
                   "awarded_at": old.get("awarded_at") if old else None,
                   "revoked_at": old.get("revoked_at") if old else None}
            was_awarded = bool(old and old.get("status") == "awarded")
            if progress.awarded:
                doc["status"] = "awarded"
                if not was_awarded:
                    # Dated by the evidence that completed it, not by when we noticed:
                    # recomputing later must give the same date.
                    doc["awarded_at"] = self._latest_time(behind, evidence_times)
                    doc["revoked_at"] = None
                    audits.append({"at": utcnow(), "actor": MAPPER, "action": "credit_awarded",
                                   "subject": key, "detail": {
                                       "rule": rule_id, "percent": progress.percent,
                                       "mastered": list(progress.mastered)}})
            elif was_awarded:
                doc["status"] = "revoked"
                doc["revoked_at"] = utcnow()
                audits.append({"at": doc["revoked_at"], "actor": MAPPER,
                               "action": "credit_revoked", "subject": key,
                               "detail": {"rule": rule_id, "percent": progress.percent,
                                          "missing": list(progress.missing),
                                          "missing_required": list(progress.missing_required)}})
            else:
                doc["status"] = "revoked" if old and old.get("status") == "revoked" \
                    else "in_progress"
            if old is None or any(old.get(k) != doc.get(k) for k in doc):
                doc["updated_at"] = utcnow()
                writes.append(pymongo.ReplaceOne({"_id": key}, doc, upsert=True))
                changed_ids.append(key)
        if writes:
            self.credits.bulk_write(writes, ordered=False)
        if audits:
            self.audit.insert_many(audits, ordered=True)
        return changed_ids

    @staticmethod
    def _credit_evidence(old: dict | None, changed: dict[tuple[str, str], dict],
                         learner: str, mastered: Sequence[str]) -> list[list]:
        """Per mastered competency, the evidence behind it: the changed record's, else what
        the credit recorded before. Pairs, not a dict: identifiers may contain dots."""
        previous = {c: ids for c, ids in (old or {}).get("evidence_by", ())}
        out = []
        for c in mastered:
            doc = changed.get((learner, c))
            out.append([c, list(doc["evidence"]) if doc is not None else previous.get(c, [])])
        return out

    def _latest_time(self, evidence_ids: list[str], cache: dict[str, dt.datetime]
                     ) -> dt.datetime | None:
        missing = [e for e in evidence_ids if e not in cache]
        if missing:
            for e in self.evidence.find({"_id": {"$in": missing}}, {"timestamp": 1}):
                cache[e["_id"]] = e["timestamp"]
        times = [cache[e] for e in evidence_ids if e in cache]
        return max(times) if times else None
