"""Who may see whose records, inside a launch.

A learner sees their own record; a mentor (parent, advisor) only the learners named in
``role_scope_mentor``, read-only; instructors and administrators the learners of *their*
course (the launch's context). Nothing crosses courses or platforms.
"""

from __future__ import annotations

from lti_tool.models import LaunchSession, Membership


def can_view_learner(session: LaunchSession, learner: str | None) -> bool:
    if not learner:
        return False
    if session.learner == learner:
        return True
    if "mentor" in session.roles and learner in (session.mentees or ()):
        return True
    if session.is_staff and session.context:
        return Membership.objects(course=session.context, learner=learner).first() is not None
    return False


def course_learners(course_id: str) -> list[Membership]:
    """Active learners of a course (roster and launches), by name."""
    members = Membership.objects(course=course_id, learner__ne=None, status="Active")
    return sorted((m for m in members if "learner" in (m.roles or [])),
                  key=lambda m: ((m.name or m.user).lower(), m.user))
