"""Read models for people: a learner's progress, a class matrix, a level's history.

Plain Python over the stored records (no Flask), so pages, exports and the API present the
same numbers. Mastery and credit records come from :mod:`mappings.records`. Each function
reads with one query per collection, bounded by the learners and competencies asked for: a
class of 30 by 40 is three queries, not 1,200.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mappings import calculation, evidence, records
from mappings.models import Competency, CreditRule, Framework, Scale


@dataclass
class LevelInfo:
    name: str
    points: float
    mastery: bool


@dataclass
class CompetencyRow:
    identifier: str
    code: str | None
    statement: str
    parent: str | None
    depth: int
    is_leaf: bool
    levels: list[LevelInfo]
    mastery_points: float
    top_points: float
    points: float | None = None
    level: str | None = None
    mastered: bool = False
    evidence_count: int = 0
    pending_count: int = 0
    last_evidence: dt.datetime | None = None

    @property
    def label(self) -> str:
        return f"{self.code} {self.statement}" if self.code else self.statement

    @property
    def level_index(self) -> int | None:
        """1-based position of the level on its scale (None: no evidence yet)."""
        if self.level is None:
            return None
        names = [lv.name for lv in self.levels]
        return names.index(self.level) + 1 if self.level in names else None


@dataclass
class CreditRow:
    identifier: str
    name: str
    total: int
    mastered: int
    needed_percent: float
    percent: float
    status: str  # in_progress, awarded, revoked
    awarded_at: dt.datetime | None
    required_missing: list[str] = field(default_factory=list)

    @property
    def needed_count(self) -> int:
        import math

        return math.ceil(self.total * self.needed_percent / 100 - 1e-9)


@dataclass
class LearnerProgress:
    learner: str
    competencies: list[CompetencyRow]
    credits: list[CreditRow]
    next_up: list[CompetencyRow]  # unmastered leaves in learning-path order


def _levels(scale: Scale) -> list[LevelInfo]:
    return [LevelInfo(lv.name, lv.points, bool(lv.mastery))
            for lv in sorted(scale.levels, key=lambda lv: lv.points)]


def competency_rows(competency_ids: Sequence[str]
                    ) -> tuple[list[CompetencyRow], dict[str, Competency]]:
    """Display rows (scale, depth, leaf or not) for competencies, in the order given; and
    the Competency documents by id."""
    items = {c.identifier: c for c in Competency.objects(identifier__in=list(competency_ids))}
    frameworks = {f.identifier: f for f in Framework.objects(
        identifier__in=list({c.framework for c in items.values()}))}
    parents = {c.parent for c in Competency.objects(
        framework__in=list(frameworks), parent__ne=None).only("parent")}
    rows = []
    for cid in competency_ids:
        c = items.get(cid)
        if c is None:
            continue
        scale = c.scale or frameworks[c.framework].scale
        depth, parent = 0, c.parent
        while parent and parent in items and depth < 20:
            depth += 1
            parent = items[parent].parent
        rows.append(CompetencyRow(c.identifier, c.code, c.statement, c.parent, depth,
                                  c.identifier not in parents, _levels(scale),
                                  scale.mastery_points, scale.top_points))
    return rows, items


def learning_path(items: dict[str, Competency], leaves: Iterable[str]) -> list[str]:
    """Leaves in ``precedes`` order (a topological order; ties by framework position)."""
    leaves = [c for c in leaves if c in items]
    wanted = set(leaves)
    before: dict[str, set[str]] = {c: set() for c in leaves}
    for c in leaves:
        for nxt in items[c].precedes or ():
            if nxt in wanted:
                before[nxt].add(c)
    order, done = [], set()
    position = {c: i for i, c in enumerate(leaves)}
    while len(order) < len(leaves):
        ready = [c for c in leaves if c not in done and before[c] <= done]
        if not ready:  # a cycle slipped through: fall back to position order
            ready = [c for c in leaves if c not in done]
        nxt = min(ready, key=position.__getitem__)
        order.append(nxt)
        done.add(nxt)
    return order


def learner_progress(db, learner: str, competency_ids: Sequence[str],
                     credit_rules: Sequence[str]) -> LearnerProgress:
    rows, items = competency_rows(competency_ids)
    by_id = {r.identifier: r for r in rows}
    for m in records.mastery(db, [learner], by_id):
        row = by_id[m["competency"]]
        row.points, row.level, row.mastered = m.get("points"), m.get("level"), \
            bool(m.get("mastered"))
    for e in evidence.of_learners(db, [learner], by_id):
        if e.get("voided"):
            continue
        row = by_id[e["competency"]]
        if e["status"] == "accepted":
            row.evidence_count += 1
            if row.last_evidence is None or e["timestamp"] > row.last_evidence:
                row.last_evidence = e["timestamp"]
        elif e["status"] == "pending":
            row.pending_count += 1
    credits = credit_rows(db, [learner], credit_rules).get(learner, [])
    path = learning_path(items, [r.identifier for r in rows if r.is_leaf])
    next_up = [by_id[c] for c in path if not by_id[c].mastered]
    return LearnerProgress(learner, rows, credits, next_up)


def credit_rows(db, learners: Sequence[str], credit_rules: Sequence[str]
                ) -> dict[str, list[CreditRow]]:
    rules = {r.identifier: r for r in CreditRule.objects(identifier__in=list(credit_rules))}
    stored: dict[tuple[str, str], dict] = {}
    mastered_by: dict[str, set[str]] = defaultdict(set)
    competencies = {c for r in rules.values() for c in r.competencies}
    for learner, held in records.load(db, learners).items():
        for rid, c in held.credits.items():
            if rid in rules:
                stored[(learner, rid)] = c
        mastered_by[learner].update(c for c, m in held.mastery.items()
                                    if c in competencies and m["mastered"])
    out: dict[str, list[CreditRow]] = {}
    for learner in learners:
        rows = []
        for rid in credit_rules:
            rule = rules.get(rid)
            if rule is None:
                continue
            doc = stored.get((learner, rid)) or {}
            progress = calculation.evaluate_credit(
                list(rule.competencies), mastered_by.get(learner, set()),
                required=list(rule.required or ()), min_percent=rule.min_percent)
            rows.append(CreditRow(rid, rule.name, len(rule.competencies),
                                  len(progress.mastered), rule.min_percent, progress.percent,
                                  doc.get("status", "in_progress"), doc.get("awarded_at"),
                                  list(progress.missing_required)))
        out[learner] = rows
    return out


@dataclass
class EvidenceRow:
    identifier: str
    statement: str
    competency: str
    points: float
    level: str | None
    status: str
    source_type: str
    timestamp: dt.datetime
    activity: str | None
    activity_name: str | None
    rule: str
    counted: bool
    actions: list[dict]


def evidence_of(db, learner: str, competency_ids: Sequence[str], *,
                include_rejected: bool = True) -> list[EvidenceRow]:
    """A learner's evidence for these competencies, newest first (voided left out)."""
    rows, _ = competency_rows(competency_ids)
    scales = {r.identifier: r for r in rows}
    out = []
    for e in evidence.of_learners(db, [learner], competency_ids):
        if e.get("voided") or (not include_rejected and e["status"] == "rejected"):
            continue
        overrides = [a["points"] for a in e.get("actions") or ()
                     if a.get("action") == "override" and a.get("points") is not None]
        points = overrides[-1] if overrides else e["points"]
        row = scales.get(e["competency"])
        level = None
        if row is not None:
            reached = [lv for lv in row.levels if points >= lv.points - 1e-9]
            level = reached[-1].name if reached else None
        out.append(EvidenceRow(e["_id"], e["statement"], e["competency"], points, level,
                               e["status"], e["source_type"], e["timestamp"],
                               e.get("activity"), e.get("activity_name"), e["rule"],
                               e["status"] == "accepted", list(e.get("actions") or ())))
    out.sort(key=lambda r: r.timestamp, reverse=True)
    return out


def timeline(db, learner: str, competency: str) -> list[tuple[dt.datetime, float]]:
    """The learner's calculated level after each accepted piece of evidence, oldest first:
    what the mastery record said at each point in time."""
    c = Competency.objects(identifier=competency).first()
    if c is None:
        return []
    framework = Framework.objects(identifier=c.framework).first()
    scale = c.scale or framework.scale
    method = c.calculation or framework.calculation
    items = []
    for e in evidence.of_learners(db, [learner], [competency]):
        if e["status"] != "accepted" or e.get("voided") is not False:
            continue
        overrides = [a["points"] for a in e.get("actions") or ()
                     if a.get("action") == "override" and a.get("points") is not None]
        items.append((e["timestamp"], e["seq"], overrides[-1] if overrides else e["points"]))
    items.sort(key=lambda i: (i[0], i[1]))
    series, scores = [], []
    for when, _, points in items:
        scores.append(points)
        value = calculation.calculate(method, scores, scale.mastery_points)
        if value is not None:
            series.append((when, value))
    return series


def class_matrix(db, learners: Sequence[str], competency_ids: Sequence[str]
                 ) -> dict[tuple[str, str], dict]:
    """(learner, competency) → {points, level, mastered} for every stored record."""
    out = {}
    for m in records.mastery(db, learners, competency_ids):
        out[(m["learner"], m["competency"])] = {
            k: m[k] for k in ("_id", "learner", "competency", "points", "level", "mastered")}
    return out


def last_evidence_times(db, learners: Sequence[str], competency_ids: Sequence[str]
                        ) -> dict[str, dt.datetime]:
    """Per learner, the time of their newest accepted evidence in these competencies."""
    out: dict[str, dt.datetime] = {}
    for e in evidence.of_learners(db, learners, competency_ids):
        if e["status"] != "accepted" or e.get("voided"):
            continue
        if e["learner"] not in out or e["timestamp"] > out[e["learner"]]:
            out[e["learner"]] = e["timestamp"]
    return out
