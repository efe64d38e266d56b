"""The derived records -- mastery per learner and competency, credit per learner and rule --
as documents, read from the progress the mapping worker stores per learner and framework
(``mappings.models.Progress``).

Why a read model: the worker stores a learner's records of one framework together in a
compact body (one write per learner and batch instead of one per record), while pages, the
API and the grade sync want records. This module is the one place that knows the body; what
it returns has the shape records always had::

    mastery: {_id: "learner|competency", learner, competency, framework, points, level,
              mastered, method, evidence, evidence_at, from_children, children, updated_at}
    credit:  {_id: "learner|rule", learner, rule, status, mastered, missing, percent,
              awarded_at, revoked_at, evidence, evidence_by, transitions, updated_at}

``evidence`` is derived, not stored: a leaf's is the ids of its counted scores in timestamp
order, a roll-up's the union of its children's, a credit's the union of its mastered
competencies' (``evidence_by`` per competency). ``evidence_at`` is the timestamp of the
newest evidence counted (a leaf's; None for a roll-up or without any): what the class view
shows as a learner's last activity, without reading evidence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson
from pymongo.database import Database

PROGRESS = "progress"
CHUNK = 200  # learners per $in
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else _EPOCH + dt.timedelta(milliseconds=ms)


@dataclass
class LearnerRecords:
    """One learner's records across the frameworks read."""

    learner: str
    mastery: dict[str, dict] = field(default_factory=dict)  # by competency
    credits: dict[str, dict] = field(default_factory=dict)  # by credit rule


def body_of(doc: dict) -> dict:
    """A progress document's body, decoded."""
    return orjson.loads(doc["s"])


def mastery_of(learner: str, framework: str, body: dict) -> dict[str, dict]:
    """The mastery records in one progress body, by competency."""
    leaves, stored = body.get("leaves") or {}, body.get("mastery") or {}
    evidence: dict[str, list[str]] = {}

    def evidence_of(c: str, seen: frozenset = frozenset()) -> list[str]:
        if c not in evidence:
            record = stored.get(c) or {}
            if "children" in record:
                evidence[c] = sorted({e for child, _, _ in record["children"]
                                      if child in stored and child not in seen
                                      for e in evidence_of(child, seen | {c})})
            else:
                evidence[c] = [s[3] for s in leaves.get(c) or ()]
        return evidence[c]

    out = {}
    for c, record in stored.items():
        children = record.get("children")
        out[c] = {"_id": f"{learner}|{c}", "learner": learner, "competency": c,
                  "framework": framework, "points": record["points"],
                  "level": record["level"], "mastered": record["mastered"],
                  "method": record["method"], "evidence": evidence_of(c),
                  "evidence_at": None if children is not None or not leaves.get(c)
                  else _time(leaves[c][-1][0]),
                  "from_children": children is not None,
                  "children": [[child, p, m, evidence_of(child) if child in stored else []]
                               for child, p, m in children or ()],
                  "updated_at": _time(record["at"])}
    return out


def credit_doc(learner: str, rule: str, stored: dict,
               mastery: dict[str, dict] | None = None) -> dict:
    """A credit as a document; ``mastery``: the learner's mastery records, for the evidence
    behind it (left empty without)."""
    evidence_by = [[c, list((mastery or {}).get(c, {}).get("evidence", ()))]
                   for c in stored["mastered"]]
    return {"_id": f"{learner}|{rule}", "learner": learner, "rule": rule,
            "status": stored["status"], "mastered": list(stored["mastered"]),
            "missing": list(stored["missing"]), "percent": stored["percent"],
            "awarded_at": _time(stored.get("awarded_at")),
            "revoked_at": _time(stored.get("revoked_at")),
            "evidence": sorted({e for _, ids in evidence_by for e in ids}),
            "evidence_by": evidence_by, "transitions": stored.get("transitions", 0),
            "updated_at": _time(stored["at"])}


def load(db: Database, learners: Iterable[str]) -> dict[str, LearnerRecords]:
    """Every record of these learners (learners without any are left out)."""
    wanted = sorted(set(learners))
    out: dict[str, LearnerRecords] = {}
    credits: list[tuple[str, str, dict]] = []
    for i in range(0, len(wanted), CHUNK):
        for doc in db[PROGRESS].find({"learner": {"$in": wanted[i:i + CHUNK]}}):
            learner = doc["learner"]
            records = out.setdefault(learner, LearnerRecords(learner))
            body = body_of(doc)
            records.mastery.update(mastery_of(learner, doc["framework"], body))
            credits += [(learner, rule, c) for rule, c in (body.get("credits") or {}).items()]
    for learner, rule, stored in credits:
        out[learner].credits[rule] = credit_doc(learner, rule, stored, out[learner].mastery)
    return out


def mastery(db: Database, learners: Iterable[str],
            competencies: Iterable[str] | None = None) -> list[dict]:
    """Mastery records of these learners (of these competencies), by learner and
    competency."""
    only = None if competencies is None else set(competencies)
    return [m for _, records in sorted(load(db, learners).items())
            for c, m in sorted(records.mastery.items()) if only is None or c in only]


def mastery_one(db: Database, learner: str, competency: str) -> dict | None:
    records = load(db, [learner]).get(learner)
    return records.mastery.get(competency) if records else None


def credits(db: Database, learners: Iterable[str],
            rules: Iterable[str] | None = None) -> list[dict]:
    """Credits of these learners (for these rules), by learner and rule."""
    only = None if rules is None else set(rules)
    return [c for _, records in sorted(load(db, learners).items())
            for r, c in sorted(records.credits.items()) if only is None or r in only]


def credit_one(db: Database, learner: str, rule: str) -> dict | None:
    records = load(db, [learner]).get(learner)
    return records.credits.get(rule) if records else None


def changed_in(doc: dict, since: dt.datetime | None) -> Iterator[tuple[str, dict]]:
    """The records of one progress document stamped after ``since``, as ("mastery", doc)
    or ("credit", doc) -- what a follower of changes (the LMS grade sync) needs. Credits
    carry no evidence here (it may lie in another framework's document)."""
    floor = -1 if since is None else (since - _EPOCH) // dt.timedelta(milliseconds=1)
    body = body_of(doc)
    learner = doc["learner"]
    mastery_records = mastery_of(learner, doc["framework"], body)
    for c, record in sorted((body.get("mastery") or {}).items()):
        if record["at"] > floor:
            yield "mastery", mastery_records[c]
    for rule, stored in sorted((body.get("credits") or {}).items()):
        if stored["at"] > floor:
            yield "credit", credit_doc(learner, rule, stored)
