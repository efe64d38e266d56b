"""The course roster from the platform (LTI Names and Role Provisioning Services 2.0).

Spec: https://www.imsglobal.org/spec/lti-nrps/v2p0/

An instructor's launch queues an import (``queue_import``; the launch itself never calls
the platform), which the sync loop (``lti_tool.sync``) runs; an instructor can also
refresh on demand. Members become ``Membership`` records with source "roster"; those
with a Learner role are linked to their learner record (created if they never launched),
so the class view lists learners who have no evidence yet. Members the platform no longer
lists are marked Inactive, never deleted (their history stays readable).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass

from pylti1p3.names_roles import NamesRolesProvisioningService
from pymongo import UpdateOne

from lti_tool import identity, roles, services
from lti_tool.models import Course, Membership, Platform
from lti_tool.services import ServiceError
from mappings.models import utcnow

log = logging.getLogger(__name__)

QUEUE = "lti_roster_sync"
# A course's roster is imported at most this often from instructor launches (every page
# an instructor opens in the LMS is a launch); the refresh button is not limited.
MIN_INTERVAL = dt.timedelta(minutes=5)
LEARNER_ROLES = {"Learner", "Student"}
CONTEXT_ROLE = "http://purl.imsglobal.org/vocab/lis/v2/membership"


@dataclass
class RosterResult:
    course: str
    members: int = 0  # listed by the platform
    learners: int = 0  # of them, with a Learner role (linked to a learner record)
    active: int = 0
    new: int = 0  # memberships we did not know before
    inactive: int = 0  # members no longer listed, marked Inactive now

    def as_dict(self) -> dict:
        return asdict(self)


def is_learner_role(raw_roles) -> bool:
    """A context (course) Learner role: full URI, sub-role or short name. An institution
    role (``institution/person#Student``) says nothing about this course."""
    for role in raw_roles or ():
        if not isinstance(role, str):
            continue
        if role.startswith(CONTEXT_ROLE):
            name = role.rsplit("#", 1)[-1] if "#" in role else role.rsplit("/", 1)[-1]
            base = role[len(CONTEXT_ROLE):].lstrip("/#").split("#", 1)[0]
            if name in LEARNER_ROLES or base in LEARNER_ROLES:
                return True
        elif "/" not in role and role.strip() in LEARNER_ROLES:
            return True
    return False


def queue_import(course_id: str | None, *, now: dt.datetime | None = None) -> bool:
    """Ask the sync loop to import the course's roster (from an instructor's launch).
    Cheap and never raises: a launch must not fail over the roster."""
    if not course_id:
        return False
    try:
        from mongoengine.connection import get_db

        col = get_db()[QUEUE]
        now = now or utcnow()
        doc = col.find_one({"_id": course_id}, {"queued_at": 1, "imported_at": 1})
        if doc and doc.get("queued_at"):
            return False
        imported = doc.get("imported_at") if doc else None
        if imported is not None:
            imported = imported if imported.tzinfo else imported.replace(tzinfo=dt.UTC)
            if imported > now - MIN_INTERVAL:
                return False
        col.update_one({"_id": course_id},
                       {"$set": {"queued_at": now, "next_attempt_at": now},
                        "$setOnInsert": {"attempts": 0}}, upsert=True)
        return True
    except Exception:  # pragma: no cover - the database is down; the launch goes on
        log.warning("could not queue the roster import of %s", course_id, exc_info=True)
        return False


def import_roster(course_id: str, *, timeout: float = services.TIMEOUT,
                  deadline: float | None = None, db=None) -> RosterResult:
    """Fetch every page of the course's membership list and store it. ``deadline``
    (a time.monotonic() value) bounds the whole import; ServiceError on any failure."""
    from mongoengine.connection import get_db

    db = db if db is not None else get_db()
    course = Course.objects(identifier=course_id).first()
    if course is None:
        raise ServiceError(f"no course {course_id!r}")
    if not course.nrps_url:
        raise ServiceError("the platform did not offer its roster service (NRPS) in any "
                           "launch of this course")
    connector = services.connector_for(course.platform, timeout=timeout, db=db)
    platform: Platform = connector.platform
    nrps = NamesRolesProvisioningService(
        connector, {"context_memberships_url": course.nrps_url})
    members: list[dict] = []
    url: str | None = course.nrps_url
    while url:
        if deadline is not None and time.monotonic() > deadline:
            raise ServiceError("the platform's roster took too long to fetch; try again "
                               "later (the background sync will also import it)")
        page, url = connector.call(lambda u=url: nrps.get_members_page(u))
        if not isinstance(page, list):
            raise ServiceError("the platform's roster is not a membership container")
        members.extend(m for m in page if isinstance(m, dict) and m.get("user_id"))
    return _store(db, course, platform, members)


def _store(db, course: Course, platform: Platform, members: list[dict]) -> RosterResult:
    result = RosterResult(course.identifier, members=len(members))
    now = utcnow()
    known = {d["user"] for d in db[Membership._meta["collection"]].find(
        {"course": course.identifier}, {"user": 1})}
    writes, seen = [], set()
    for member in members:
        sub = str(member["user_id"])
        user = f"{platform.issuer}|{sub}"
        if user in seen:
            continue
        seen.add(user)
        raw = [r for r in member.get("roles") or () if isinstance(r, str)]
        email = member.get("email") or None
        name = member.get("name") or " ".join(
            p for p in (member.get("given_name"), member.get("family_name")) if p) or None
        learner = None
        if is_learner_role(raw):
            learner = identity.learner_for_lti_user(platform.issuer, sub, email=email,
                                                    name=name)
            result.learners += 1
        status = member.get("status") or "Active"
        status = "Active" if status == "Active" else "Inactive"
        result.active += status == "Active"
        result.new += user not in known
        writes.append(UpdateOne(
            {"_id": f"{course.identifier}|{user}"},
            {"$set": {"course": course.identifier, "user": user, "learner": learner,
                      "name": name, "email": email, "roles": roles.normalise(raw),
                      "status": status, "source": "roster", "updated_at": now}},
            upsert=True))
    col = db[Membership._meta["collection"]]
    if writes:
        col.bulk_write(writes, ordered=False)
    gone = col.update_many({"course": course.identifier, "user": {"$nin": sorted(seen)},
                            "status": {"$ne": "Inactive"}},
                           {"$set": {"status": "Inactive", "updated_at": now}})
    result.inactive = gone.modified_count
    db[QUEUE].update_one({"_id": course.identifier}, {
        "$set": {"imported_at": now, "counts": result.as_dict(), "last_error": None,
                 "attempts": 0}}, upsert=True)
    return result


def class_list(course_id: str) -> list[dict]:
    """The course's people, learners first, as the class view lists them."""
    out = []
    for m in Membership.objects(course=course_id).order_by("name"):
        out.append({"user": m.user, "learner": m.learner, "name": m.name, "email": m.email,
                    "roles": list(m.roles), "status": m.status, "source": m.source})
    out.sort(key=lambda m: (m["status"] != "Active", "learner" not in m["roles"],
                            (m["name"] or "").lower()))
    return out


def status_of(course_id: str, db=None) -> dict:
    from mongoengine.connection import get_db

    db = db if db is not None else get_db()
    doc = db[QUEUE].find_one({"_id": course_id}) or {}
    return {"queued": bool(doc.get("queued_at")), "imported_at": doc.get("imported_at"),
            "counts": doc.get("counts"), "last_error": doc.get("last_error"),
            "attempts": doc.get("attempts", 0), "next_attempt_at":
            doc.get("next_attempt_at") if doc.get("queued_at") else None}
