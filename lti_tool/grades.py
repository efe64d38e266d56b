"""Grades to the LMS gradebook (LTI Assignment and Grade Services 2.0).

Spec: https://www.imsglobal.org/spec/lti-ags/v2p0/

Each course gets one line item per competency it uses (``resourceId`` = the competency
id, ``scoreMaximum`` = the top of its scale) and one per course credit (``resourceId`` =
``credit:<rule id>``, ``scoreMaximum`` 100, the percent of its competencies proficient),
all tagged ``masteryhub``. A line item is looked up by resourceId (or created) once, and
its URL kept in ``lti_lineitems``.

Work arrives as a queue (``lti_grade_queue``) of (course, LTI user, resource) items that
``lti_tool.sync`` fills from mastery and credit changes and drains here, never in a web
request. What was last posted is kept per (course, resource, user) in ``lti_scores``: an
unchanged value is not posted again, and each new score carries a timestamp later than
the previous one (the platform ignores a score not newer than the last it has).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pylti1p3.assignments_grades import AssignmentsGradesService
from pylti1p3.grade import Grade
from pylti1p3.lineitem import LineItem
from pylti1p3.utils import add_param_to_url
from pymongo import UpdateOne
from pymongo.database import Database

from lti_tool import services
from lti_tool.courses import Scope, scope_of
from lti_tool.models import Course
from lti_tool.services import ServiceError
from mappings import catalog as catalog_module
from mappings import evidence, records

log = logging.getLogger(__name__)

SCOPE_LINEITEM = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"
SCOPE_SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
TAG = "masteryhub"
CREDIT_PREFIX = "credit:"
LABEL_MAX = 100

LINEITEMS = "lti_lineitems"
SCORES = "lti_scores"
QUEUE = "lti_grade_queue"

# Retry delays (seconds) after the 1st, 2nd, ... failure; the last one repeats.
BACKOFF = (30.0, 120.0, 600.0, 3600.0)


def backoff_delay(attempts: int, steps: tuple[float, ...] = BACKOFF) -> dt.timedelta:
    return dt.timedelta(seconds=steps[min(max(attempts, 1), len(steps)) - 1])


def can_sync(course: Course | None) -> bool:
    """The platform gave us a line-items URL and both scopes we need."""
    ags = (course.ags if course else None) or {}
    scopes = set(ags.get("scope") or ())
    return bool(ags.get("lineitems")) and {SCOPE_LINEITEM, SCOPE_SCORE} <= scopes


def lti_sub(user: str) -> str:
    """The LTI ``sub`` of a Membership.user ("iss|sub")."""
    return user.split("|", 1)[1] if "|" in user else user


def iso(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as AGS timestamps are written."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _trim(text: str, limit: int = LABEL_MAX) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


# -- what a course's gradebook holds ------------------------------------------------------
@dataclass
class Target:
    resource_id: str
    label: str
    score_maximum: float
    kind: str  # "competency" | "credit"
    ref: str  # competency id or credit rule id


def targets_of(scope: Scope, catalog: catalog_module.Catalog) -> dict[str, Target]:
    out: dict[str, Target] = {}
    for cid in scope.competencies:
        competency = catalog.competencies.get(cid)
        if competency is None:
            continue
        label = f"{competency.code} — {competency.statement}" if competency.code \
            else competency.statement
        out[cid] = Target(cid, _trim(label), float(catalog.scale_of(cid).top_points),
                          "competency", cid)
    rules = {r.identifier: r for r in catalog.credit_rules}
    for rid in scope.credit_rules:
        rule = rules.get(rid)
        if rule is None:
            continue
        out[CREDIT_PREFIX + rid] = Target(CREDIT_PREFIX + rid, _trim(f"Credit — {rule.name}"),
                                          100.0, "credit", rid)
    return out


def resource_of_credit(rule_id: str) -> str:
    return CREDIT_PREFIX + rule_id


# -- the score a learner should have -------------------------------------------------------
def desired_score(db: Database, target: Target, learner: str | None,
                  catalog: catalog_module.Catalog) -> dict:
    """The score fields (without userId and timestamp) for a learner on a line item."""
    if target.kind == "credit":
        return _credit_score(db, target, learner, catalog)
    return _mastery_score(db, target, learner, catalog)


def _mastery_score(db: Database, target: Target, learner: str | None,
                   catalog: catalog_module.Catalog) -> dict:
    m = records.mastery_one(db, learner, target.ref) if learner else None
    points = m.get("points") if m else None
    value: dict = {"scoreMaximum": target.score_maximum}
    if points is not None:
        scale = catalog.scale_of(target.ref)
        level = m.get("level") or (scale.level_for(points).name
                                   if scale.level_for(points) else None)
        value |= {"scoreGiven": round(float(max(points, 0.0)), 4),
                  "activityProgress": "Completed" if m.get("mastered") else "InProgress",
                  "gradingProgress": "FullyGraded",
                  "comment": (level or f"{points:g} points") +
                  (" — mastered" if m.get("mastered") else "")}
        return value
    pending = bool(learner) and any(
        e["status"] == "pending" and e.get("voided") is False
        for e in evidence.of_learners(db, [learner], [target.ref]))
    if pending:
        return value | {"activityProgress": "InProgress", "gradingProgress": "Pending",
                        "comment": "Evidence awaiting a teacher's review"}
    if m and m.get("evidence"):
        return value | {"activityProgress": "InProgress", "gradingProgress": "NotReady"}
    return value | {"activityProgress": "Initialized", "gradingProgress": "NotReady"}


def _credit_score(db: Database, target: Target, learner: str | None,
                  catalog: catalog_module.Catalog) -> dict:
    c = records.credit_one(db, learner, target.ref) if learner else None
    value: dict = {"scoreMaximum": 100.0}
    if c is None:
        return value | {"activityProgress": "Initialized", "gradingProgress": "NotReady"}
    percent = round(float(c.get("percent") or 0.0), 2)
    value["scoreGiven"] = percent
    value["gradingProgress"] = "FullyGraded"
    rule = next((r for r in catalog.credit_rules if r.identifier == target.ref), None)
    needed = f"{rule.min_percent:g}%" if rule else "the required share"
    if c.get("status") == "awarded":
        return value | {"activityProgress": "Completed",
                        "comment": f"Credit awarded ({percent:g}% of competencies proficient)"}
    if c.get("status") == "revoked":
        return value | {"activityProgress": "InProgress",
                        "comment": f"Credit revoked: {percent:g}% of competencies proficient, "
                                   f"{needed} needed"}
    return value | {"activityProgress": "InProgress" if percent > 0 or c.get("evidence")
                    else "Initialized",
                    "comment": f"{percent:g}% of competencies proficient; credit at {needed}"}


# -- line items -----------------------------------------------------------------------
def _items_of(body) -> list[dict]:
    """A line-item container: a JSON array by the spec; lti1p3platform 0.1.8 wraps it in
    ``{"content": [...]}``."""
    if isinstance(body, list):
        return [i for i in body if isinstance(i, dict)]
    if isinstance(body, dict) and isinstance(body.get("content"), list):
        return [i for i in body["content"] if isinstance(i, dict)]
    if body is None or body == "":
        return []
    raise ServiceError(f"the platform's line-item list is not a JSON array: {str(body)[:120]}")


def find_lineitem(connector: services.Connector, ags: dict, resource_id: str) -> dict | None:
    """The platform's line item with this resourceId (filtered by the platform through
    ``resource_id``, checked again here since some platforms ignore the filter)."""
    url = add_param_to_url(ags["lineitems"], "resource_id", resource_id)
    pages = connector.get_paginated_data(
        list(ags.get("scope") or ()), url,
        accept="application/vnd.ims.lis.v2.lineitemcontainer+json")
    for page in pages:
        for item in _items_of(page["body"]):
            if item.get("resourceId") == resource_id and item.get("id"):
                return item
    return None


def ensure_lineitem(db: Database, connector: services.Connector, course: Course,
                    target: Target) -> str:
    """The line item URL for a course's resource: remembered, found, or created."""
    key = f"{course.identifier}|{target.resource_id}"
    known = db[LINEITEMS].find_one({"_id": key})
    if known:
        return known["url"]
    ags = dict(course.ags)
    item = connector.call(lambda: find_lineitem(connector, ags, target.resource_id))
    if item is None:
        new = (LineItem().set_label(target.label).set_score_maximum(target.score_maximum)
               .set_resource_id(target.resource_id).set_tag(TAG))
        service = AssignmentsGradesService(connector, ags)  # type: ignore[arg-type]
        created = connector.call(lambda: service.create_lineitem(new))
        item = {"id": created.get_id()}
        if not item["id"]:
            raise ServiceError("the platform created a line item but returned no id")
    db[LINEITEMS].update_one(
        {"_id": key}, {"$set": {"course": course.identifier, "resource_id": target.resource_id,
                                "url": item["id"], "label": target.label,
                                "score_maximum": target.score_maximum,
                                "at": dt.datetime.now(dt.UTC)}}, upsert=True)
    return item["id"]


def forget_lineitem(db: Database, course_id: str, resource_id: str) -> None:
    db[LINEITEMS].delete_one({"_id": f"{course_id}|{resource_id}"})


# -- posting ---------------------------------------------------------------------------
@dataclass
class CourseResult:
    course: str
    posted: list[tuple[str, str, dict]] = field(default_factory=list)  # (user, resource, value)
    unchanged: int = 0
    dropped: int = 0  # items no longer in the course's scope / gradebook
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (user, resource, error)


def post_score(db: Database, connector: services.Connector, course: Course, target: Target,
               user: str, learner: str | None, value: dict, now: dt.datetime) -> dict | None:
    """Post the score unless it equals the last one posted; returns what was posted."""
    key = f"{course.identifier}|{target.resource_id}|{user}"
    last = db[SCORES].find_one({"_id": key})
    if last and last.get("value") == value:
        return None
    url = ensure_lineitem(db, connector, course, target)
    stamp = now
    if last and last.get("timestamp"):
        stamp = max(now, parse_iso(last["timestamp"]) + dt.timedelta(milliseconds=1))
    grade = (Grade().set_user_id(lti_sub(user)).set_timestamp(iso(stamp))
             .set_score_maximum(value["scoreMaximum"])
             .set_activity_progress(value["activityProgress"])
             .set_grading_progress(value["gradingProgress"]))
    if value.get("scoreGiven") is not None:
        grade.set_score_given(value["scoreGiven"])
    if value.get("comment"):
        grade.set_comment(value["comment"])
    service = AssignmentsGradesService(connector, dict(course.ags))  # type: ignore[arg-type]
    try:
        connector.call(lambda: service.put_grade(grade, LineItem({"id": url})))
    except ServiceError as exc:
        if exc.status != 404:
            raise
        # The line item was deleted in the LMS: create it again, once.
        forget_lineitem(db, course.identifier, target.resource_id)
        url = ensure_lineitem(db, connector, course, target)
        connector.call(lambda: service.put_grade(grade, LineItem({"id": url})))
    db[SCORES].update_one({"_id": key}, {"$set": {
        "course": course.identifier, "resource_id": target.resource_id, "user": user,
        "learner": learner, "lineitem": url, "value": value, "timestamp": iso(stamp),
        "posted_at": now}}, upsert=True)
    return value


def enqueue(db: Database, items: set[tuple[str, str, str | None, str]],
            now: dt.datetime) -> int:
    """Queue (course, user, learner, resource) items; an item queued again keeps its
    retry state but is marked as changed (so a pass in flight does not drop it)."""
    if not items:
        return 0
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    db[QUEUE].bulk_write([
        UpdateOne({"_id": f"{course}|{user}|{resource}"},
                  {"$set": {"course": course, "user": user, "learner": learner,
                            "resource": resource, "at": now},
                   "$setOnInsert": {"attempts": 0, "next_attempt_at": epoch}}, upsert=True)
        for course, user, learner, resource in sorted(items, key=lambda i: (i[0], i[1], i[3]))],
        ordered=False)
    return len(items)


def process_course(db: Database, course_id: str, items: list[dict], *, now: dt.datetime,
                   catalog: catalog_module.Catalog, steps: tuple[float, ...] = BACKOFF,
                   timeout: float = services.TIMEOUT,
                   check: Callable[[], None] = lambda: None) -> CourseResult:
    """Post the queued items of one course. A failure that concerns the whole course
    (token, network, server errors) raises ServiceError and leaves the rest queued; a
    refusal of one score is kept on its item with its own backoff."""
    result = CourseResult(course_id)
    course = Course.objects(identifier=course_id).first()
    if course is None or not can_sync(course):
        db[QUEUE].delete_many({"_id": {"$in": [i["_id"] for i in items]}})
        result.dropped = len(items)
        return result
    targets = targets_of(scope_of(course), catalog)
    connector = services.connector_for(course.platform, timeout=timeout, db=db)
    for item in items:
        check()
        target = targets.get(item["resource"])
        if target is None:
            db[QUEUE].delete_one({"_id": item["_id"], "at": item["at"]})
            result.dropped += 1
            continue
        value = desired_score(db, target, item.get("learner"), catalog)
        try:
            posted = post_score(db, connector, course, target, item["user"],
                                item.get("learner"), value, now)
        except ServiceError as exc:
            if not exc.permanent:
                raise
            attempts = int(item.get("attempts") or 0) + 1
            db[QUEUE].update_one({"_id": item["_id"]}, {"$set": {
                "attempts": attempts, "error": str(exc), "failed_at": now,
                "next_attempt_at": now + backoff_delay(attempts, steps)}})
            result.failed.append((item["user"], target.resource_id, str(exc)))
            continue
        if posted is None:
            result.unchanged += 1
        else:
            result.posted.append((item["user"], target.resource_id, posted))
        db[QUEUE].delete_one({"_id": item["_id"], "at": item["at"]})
    return result


def requeue_course(db: Database, course_id: str, now: dt.datetime,
                   catalog: catalog_module.Catalog) -> int:
    """Queue every active member's recorded mastery and credits in the course (after the
    course is linked to other competencies, or on an operator's request)."""
    course = Course.objects(identifier=course_id).first()
    if course is None:
        raise ServiceError(f"no course {course_id!r}")
    targets = targets_of(scope_of(course), catalog)
    members = list(db["lti_memberships"].find(
        {"course": course_id, "status": "Active", "learner": {"$ne": None}},
        {"user": 1, "learner": 1}))
    by_learner: dict[str, list[str]] = {}
    for m in members:
        by_learner.setdefault(m["learner"], []).append(m["user"])
    items: set[tuple[str, str, str | None, str]] = set()
    for learner, found in records.load(db, by_learner).items():
        for resource in [*found.mastery, *map(resource_of_credit, found.credits)]:
            if resource in targets:
                for user in by_learner[learner]:
                    items.add((course_id, user, learner, resource))
    return enqueue(db, items, now)
