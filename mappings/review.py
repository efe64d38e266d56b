"""Teachers' decisions on evidence, and explanations of every level and credit.

A decision (approve, reject, override with a rating) is recorded on the evidence with who
and when, written to the audit log, and immediately recomputes the learner's mastery and
credit, so the teacher sees the effect of what they did.
"""

from __future__ import annotations

from pymongo.database import Database

from mappings import catalog as catalog_module
from mappings import evidence as evidence_store
from mappings import records
from mappings.models import utcnow
from mappings.worker import apply_dirty_now, mark_dirty

ACTIONS = ("approve", "reject", "override")


class ReviewError(ValueError):
    pass


def decide(db: Database, evidence_id: str, action: str, *, by: str,
           comment: str | None = None, points: float | None = None,
           catalog: catalog_module.Catalog | None = None,
           credential: str | None = None) -> dict:
    """Apply a teacher's decision; returns the updated evidence document."""
    if action not in ACTIONS:
        raise ReviewError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if not by:
        raise ReviewError("a decision needs the reviewer's name")
    evidence = evidence_store.get(db, evidence_id)
    if evidence is None:
        raise ReviewError(f"no evidence {evidence_id!r}")
    if evidence.get("voided"):
        raise ReviewError(f"evidence {evidence_id!r} comes from a voided statement; it no "
                          "longer counts and cannot be reviewed")
    if evidence.get("status") == "superseded":
        raise ReviewError(f"evidence {evidence_id!r} is superseded: the mapping rules no "
                          "longer produce it, so it does not count and cannot be reviewed")
    catalog = catalog or catalog_module.load()
    if evidence["competency"] not in catalog.competencies:
        raise ReviewError(f"competency {evidence['competency']!r} is no longer in any "
                          "framework")
    if action == "override":
        if points is None:
            raise ReviewError("an override needs the rating (points on the competency's scale)")
        scale = catalog.scale_of(evidence["competency"])
        low = min(level.points for level in scale.levels)
        if not low <= points <= scale.top_points:
            raise ReviewError(f"rating {points} is outside the scale ({low}..{scale.top_points})")
    elif points is not None:
        raise ReviewError("only an override takes a rating")
    now = utcnow()
    # `by` is who the reviewer says they are; `credential` is what authenticated the call.
    record = {"action": action, "by": by, "at": now, "comment": comment, "points": points,
              "credential": credential}
    status = {"approve": "accepted", "reject": "rejected", "override": "accepted"}[action]
    previous: list[str] = []

    def decided(e: dict) -> dict:
        # Checked again on the record as it is now (it may have changed since read).
        if e.get("voided") or e.get("status") == "superseded":
            raise ReviewError(f"evidence {evidence_id!r} was voided or superseded "
                              "meanwhile; it can no longer be reviewed")
        previous[:] = [e["status"]]
        return dict(e, actions=[*(e.get("actions") or ()), record], status=status)

    try:
        done = evidence_store.change(db, [evidence["learner"]], decided, ids=[evidence_id])
    except evidence_store.ConflictError:
        raise ReviewError(f"evidence {evidence_id!r} is being changed by others right now; "
                          "try again") from None
    if not done:
        raise ReviewError(f"no evidence {evidence_id!r} any more (its learner was merged "
                          "meanwhile?); reload and decide again")
    db["audit"].insert_one({"at": now, "actor": by, "action": f"evidence_{action}",
                            "subject": evidence_id,
                            "detail": {"comment": comment, "points": points,
                                       "credential": credential,
                                       "previous_status": (previous or
                                                           [evidence["status"]])[0]}})
    mark_dirty(db, {(evidence["learner"], evidence["competency"])})
    apply_dirty_now(db)
    return evidence_store.get(db, evidence_id)


def explain(db: Database, learner: str, competency: str) -> dict:
    """The chain behind a learner's level: credits <- mastery <- evidence <- statements."""
    held = records.load(db, [learner]).get(learner) or records.LearnerRecords(learner)
    mastery = held.mastery.get(competency) or {
        "learner": learner, "competency": competency, "points": None, "level": None,
        "mastered": False, "evidence": []}
    evidence_ids = list(mastery.get("evidence", []))
    evidence = sorted(evidence_store.of_learners(db, [learner], [competency]),
                      key=lambda e: (e["timestamp"], e["seq"]))
    by_rule = sorted(held.credits.items())
    credits = [c for _, c in by_rule if competency in c["mastered"]]
    credits += [c for _, c in by_rule if competency in c["missing"]]
    return {
        "learner": learner,
        "competency": competency,
        "mastery": {k: mastery.get(k) for k in ("points", "level", "mastered", "method",
                                                 "from_children")},
        "evidence": [{
            "id": e["_id"], "statement": e["statement"], "rule": e["rule"],
            "points": e["points"], "status": e["status"], "voided": e.get("voided", False),
            "superseded": e["status"] == "superseded",
            "superseded_status": e.get("superseded_status"),
            "superseded_at": e.get("superseded_at"),
            "counted": e["_id"] in evidence_ids, "source_type": e["source_type"],
            "timestamp": e["timestamp"], "activity": e.get("activity"),
            "actions": e.get("actions", []),
        } for e in evidence],
        "credits": [{"rule": c["rule"], "status": c["status"], "percent": c["percent"],
                     "awarded_at": c.get("awarded_at"), "revoked_at": c.get("revoked_at")}
                    for c in credits],
    }
