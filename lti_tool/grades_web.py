"""JSON endpoints inside a launch for the gradebook sync and the roster (staff only).

Every endpoint works on the launch session's own course: the course is never taken from
the request, so an instructor of one course cannot read or refresh another.
"""

from __future__ import annotations

import time
from functools import wraps

from flask import Blueprint, current_app, jsonify

from lti_tool import roster
from lti_tool.services import ServiceError
from lti_tool.sync import sync_status
from lti_tool.web import launched

bp = Blueprint("lti_grades", __name__, url_prefix="/lti")

REFRESH_TIMEOUT = 5.0  # seconds per call to the platform
REFRESH_DEADLINE = 10.0  # seconds for the whole refresh


def staff_course(view):
    """Instructors and administrators of the session's course only."""
    @wraps(view)
    def wrapper(session, *args, **kwargs):
        if not session.is_staff:
            return jsonify({"error": "forbidden",
                            "message": "Only the course's instructors can see this."}), 403
        if not session.context:
            return jsonify({"error": "not_found",
                            "message": "This launch has no course."}), 404
        return view(session, *args, **kwargs)
    return wrapper


def _json(value):
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if hasattr(value, "isoformat"):
        from lti_tool.grades import iso

        return iso(value)
    return value


@bp.get("/s/<token>/grades/status")
@launched
@staff_course
def grades_status(session):
    return jsonify(_json(sync_status(session.context)))


@bp.get("/s/<token>/roster")
@launched
@staff_course
def class_roster(session):
    return jsonify({"course": session.context, "members": roster.class_list(session.context),
                    "sync": _json(roster.status_of(session.context))})


@bp.post("/s/<token>/roster/refresh")
@launched
@staff_course
def roster_refresh(session):
    """Import the roster now (bounded by a short deadline; the background sync imports
    it too, so a slow platform only delays the list)."""
    try:
        result = roster.import_roster(session.context, timeout=REFRESH_TIMEOUT,
                                      deadline=time.monotonic() + REFRESH_DEADLINE)
    except ServiceError as exc:
        current_app.logger.warning("roster refresh of %s failed: %s", session.context, exc)
        return jsonify({"error": "platform_error", "message": str(exc)}), 502
    return jsonify(result.as_dict())
