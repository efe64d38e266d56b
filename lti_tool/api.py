"""A small JSON API over the competency records, for the pages and for integrations.

Authentication: HTTP Basic with an LRS credential that has the ``all/read`` scope (reads)
or ``all`` (reads and review decisions) — the admin credentials of
``masteryhub credentials create``. The LTI pages reach the same functions through
their own session checks.
"""

from __future__ import annotations

import datetime as dt
import heapq
from functools import wraps

from flask import Blueprint, Response, current_app, jsonify, request

from lrs.auth import authenticate
from lrs.errors import XAPIError
from lrs.web import error_response
from mappings import evidence as evidence_store
from mappings import records, review
from mappings.models import Competency, CreditRule, Framework, Learner
from mappings.worker import worker_status_of

bp = Blueprint("api", __name__, url_prefix="/api")


def _db():
    return current_app.extensions["masteryhub.db"]


def _error(status: int, message: str) -> Response:
    return error_response(status, message, realm="Mastery Hub API")


def authorized(write: bool = False):
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            try:
                credential = authenticate(request.headers.get("Authorization"))
            except XAPIError as exc:
                return _error(exc.status, exc.message)
            allowed = credential.has("all") if write else credential.has("all", "all/read")
            if not allowed:
                return _error(403, "this credential may not use the API "
                                   f"(needs {'all' if write else 'all/read or all'})")
            request.environ["masteryhub.credential"] = credential
            return view(*args, **kwargs)
        return wrapper
    return decorate


def _json(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items() if k != "_id"} | (
            {"id": value["_id"]} if "_id" in value else {})
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


@bp.get("/frameworks")
@authorized()
def frameworks() -> Response:
    return jsonify([{"id": f.identifier, "title": f.title, "source": f.source,
                     "calculation": f.calculation, "scale": f.scale.name}
                    for f in Framework.objects.order_by("title")])


@bp.get("/frameworks/<framework_id>")
@authorized()
def framework(framework_id: str) -> Response:
    found = Framework.objects(identifier=framework_id).first()
    if found is None:
        return _error(404, f"no framework {framework_id!r}")
    items = Competency.objects(framework=framework_id).order_by("position")
    return jsonify({
        "id": found.identifier, "title": found.title, "calculation": found.calculation,
        "scale": {"name": found.scale.name, "levels": [
            {"name": lv.name, "points": lv.points, "mastery": lv.mastery}
            for lv in found.scale.levels]},
        "competencies": [{"id": c.identifier, "code": c.code, "statement": c.statement,
                          "parent": c.parent, "precedes": list(c.precedes),
                          "rollup": c.rollup.method if c.rollup else "none"} for c in items],
        "credits": [{"id": r.identifier, "name": r.name, "competencies": list(r.competencies),
                     "required": list(r.required), "min_percent": r.min_percent}
                    for r in CreditRule.objects(framework=framework_id)],
    })


def _learner_or_404(learner_id: str) -> Learner | Response:
    learner = Learner.objects(identifier=learner_id).first()
    return learner if learner is not None else _error(404, f"no learner {learner_id!r}")


@bp.get("/learners/<learner_id>")
@authorized()
def learner(learner_id: str) -> Response:
    found = _learner_or_404(learner_id)
    if isinstance(found, Response):
        return found
    own = records.load(_db(), [learner_id]).get(learner_id) or records.LearnerRecords(learner_id)
    framework = request.args.get("framework")
    mastery = [m for _, m in sorted(own.mastery.items())
               if not framework or m["framework"] == framework]
    credits = [c for _, c in sorted(own.credits.items())]
    return jsonify({"id": found.identifier, "name": found.name, "agents": list(found.agents),
                    "mastery": _json(mastery), "credits": _json(credits)})


@bp.get("/learners/<learner_id>/competencies/<competency_id>")
@authorized()
def explain(learner_id: str, competency_id: str) -> Response:
    found = _learner_or_404(learner_id)
    if isinstance(found, Response):
        return found
    if Competency.objects(identifier=competency_id).first() is None:
        return _error(404, f"no competency {competency_id!r}")
    return jsonify(_json(review.explain(_db(), learner_id, competency_id)))


@bp.get("/evidence")
@authorized()
def evidence() -> Response:
    status = request.args.get("status", "pending")
    if status not in ("pending", "accepted", "rejected"):
        return _error(400, "status must be pending, accepted or rejected")
    query: dict = {"status": status, "voided": False}
    for key in ("framework", "learner", "competency"):
        if request.args.get(key):
            query[key] = request.args[key]
    if status != "pending" and "learner" not in query:
        # Evidence is stored by learner; all of a framework's would be a whole-collection read.
        return _error(400, f"listing {status} evidence needs a learner filter")
    try:
        limit = min(int(request.args.get("limit", "100")), 500)
    except ValueError:
        return _error(400, "limit must be a whole number")
    if limit < 1:
        return _error(400, "limit must be at least 1")
    db = _db()
    if "learner" in query:  # the learner's evidence buckets
        found = evidence_store.of_learners(
            db, [query["learner"]], [query["competency"]] if "competency" in query else None)
    else:  # pending: the buckets' pending index
        found = evidence_store.pending(db, [query["framework"]] if "framework" in query
                                       else None)
    # Newest first (ties by id, for a stable page), at most ``limit``.
    docs = heapq.nlargest(limit, (r for r in found
                                  if all(r.get(k) == v for k, v in query.items())),
                          key=lambda r: (r["timestamp"], r["_id"]))
    return jsonify(_json(docs))


@bp.post("/evidence/<path:evidence_id>/review")
@authorized(write=True)
def decide(evidence_id: str) -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "send a JSON object: {action, by, comment?, points?}")
    unknown = set(body) - {"action", "by", "comment", "points"}
    if unknown:
        return _error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    points = body.get("points")
    if points is not None and (isinstance(points, bool) or not isinstance(points, int | float)):
        return _error(400, "points must be a number")
    if not isinstance(body.get("by", ""), str) or not isinstance(body.get("comment") or "", str):
        return _error(400, "by and comment must be strings")
    try:
        updated = review.decide(_db(), evidence_id, str(body.get("action", "")),
                                by=body.get("by", ""), comment=body.get("comment"),
                                points=points,
                                credential=request.environ["masteryhub.credential"].key)
    except review.ReviewError as exc:
        status = 404 if str(exc).startswith("no evidence") else 400
        return _error(status, str(exc))
    return jsonify(_json(updated))


@bp.get("/worker")
@authorized()
def worker_status() -> Response:
    status = worker_status_of(_db())
    errors = list(_db()["mapping_errors"].find().sort("at", -1).limit(20))
    return jsonify({"position": status.position, "watermark": status.watermark,
                    "lag": status.lag, "holder": status.holder,
                    "lease_until": _json(status.lease_until), "errors": _json(errors)})
