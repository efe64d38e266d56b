"""Pages inside a launch: the learner dashboard, a competency's evidence and history,
goals and learner submissions, and the mentor's list of learners.

Every view runs inside a launch session (token in the path) and checks, per learner, that
the person launching may see that learner (lti_tool.access). Numbers come from
mappings.progress, the same read model the API and exports use.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from mongoengine.connection import get_db

from lrs.keys import ifi
from lti_tool import access, charts, identity, provider
from lti_tool.courses import scope_of
from lti_tool.models import Course, Goal, LaunchSession
from lti_tool.web import error_page, launched
from mappings import progress
from mappings.models import Learner, utcnow

bp = Blueprint("pages", __name__, url_prefix="/lti/s/<token>", template_folder="templates")
# Stylesheets and other public files, at /assets/... (nothing in them is private).
assets = Blueprint("assets", __name__, static_folder="static", static_url_path="/assets")

SOURCE_LABELS = {
    "online_course": "Online course", "internship": "Internship", "project": "Project",
    "dual_enrollment": "Dual enrollment", "community_service": "Community service",
    "assessment": "Assessment", "teacher_observation": "Teacher observation",
    "credit_recovery": "Credit recovery", "self_reported": "Own submission", "other": "Other",
}
# What a learner may say their evidence comes from when they submit it.
SUBMISSION_SOURCES = ("project", "internship", "community_service", "dual_enrollment",
                      "online_course", "self_reported", "other")
MAX_FILE_BYTES = 5 * 1024 * 1024


@bp.app_template_filter("date")
def _date(value: dt.datetime | None) -> str:
    return value.strftime("%d %b %Y") if value else "—"


@bp.app_template_filter("source")
def _source(value: str) -> str:
    return SOURCE_LABELS.get(value, value.replace("_", " ").capitalize())


@bp.app_context_processor
def _navigation():
    def nav(session: LaunchSession) -> list[tuple[str, str]]:
        links = []
        if session.learner and "learner" in session.roles:
            links.append(("My progress", url_for("pages.dashboard", token=session.token,
                                                 learner=session.learner)))
            if "teacher.export_me" in current_app.view_functions:
                links.append(("Download my record", url_for("teacher.export_me",
                                                            token=session.token)))
        if "mentor" in session.roles:
            links.append(("My learners", url_for("pages.mentees", token=session.token)))
        for endpoint, label in (("teacher.class_view", "Class"), ("teacher.review", "Review"),
                                ("teacher.export_class", "Export"),
                                ("course_setup.setup", "Course setup")):
            if session.is_staff and endpoint in current_app.view_functions:
                links.append((label, url_for(endpoint, token=session.token)))
        return links
    return {"nav": nav}


def _course(session: LaunchSession) -> Course | None:
    return Course.objects(identifier=session.context).first() if session.context else None


def _learner_or_403(session: LaunchSession, learner: str):
    if not access.can_view_learner(session, learner):
        abort(403)
    found = Learner.objects(identifier=learner).first()
    if found is None:
        abort(404)
    return found


@bp.errorhandler(403)
def _forbidden(_):
    return error_page("You may not see this page: it belongs to another learner or needs "
                      "a teacher's role in this course.", 403)


@bp.errorhandler(413)
def _too_large(_):
    return error_page("The upload is larger than 5 MB; share a link to the file instead.", 413)


@bp.errorhandler(404)
def _not_found(_):
    return error_page("There is no such record in this course.", 404)


@bp.get("/learner/<learner>/")
@launched
def dashboard(session: LaunchSession, learner: str):
    person = _learner_or_403(session, learner)
    course = _course(session)
    scope = scope_of(course)
    db = get_db()
    view = progress.learner_progress(db, learner, scope.competencies, scope.credit_rules)
    evidence = progress.evidence_of(db, learner, scope.competencies)
    by_competency: dict[str, list] = {}
    for item in evidence:
        by_competency.setdefault(item.competency, []).append(item)
    goal = Goal.objects(identifier=f"{learner}|{session.context}").first()
    goals = [row for row in view.competencies if goal and row.identifier in goal.competencies]
    return render_template(
        "lti/dashboard.html", session=session, course=course, person=person, view=view,
        evidence=by_competency, goals=goals, own=session.learner == learner,
        read_only=session.learner != learner and not session.is_staff,
        pending=[e for e in evidence if e.status == "pending"],
        submitted=request.args.get("submitted"))


@bp.get("/learner/<learner>/competency/<competency>")
@launched
def competency(session: LaunchSession, learner: str, competency: str):
    person = _learner_or_403(session, learner)
    scope = scope_of(_course(session))
    if competency not in scope.competencies:
        abort(404)
    db = get_db()
    view = progress.learner_progress(db, learner, [competency], [])
    row = view.competencies[0]
    series = progress.timeline(db, learner, competency)
    return render_template(
        "lti/competency.html", session=session, person=person, row=row,
        evidence=progress.evidence_of(db, learner, [competency]),
        chart=charts.timeline_svg(series, row.levels, title=f"{row.label}: level over time"),
        series=series)


@bp.post("/learner/<learner>/goals")
@launched
def set_goals(session: LaunchSession, learner: str):
    """A learner picks what to work on next (their own goals only)."""
    if session.learner != learner:
        abort(403)
    scope = scope_of(_course(session))
    chosen = [c for c in request.form.getlist("competency") if c in scope.competencies]
    unknown = [c for c in request.form.getlist("competency") if c not in scope.competencies]
    if unknown:
        return error_page("Goals can only be competencies of this course.", 400)
    Goal._get_collection().update_one(
        {"_id": f"{learner}|{session.context}"},
        {"$set": {"learner": learner, "course": session.context, "competencies": chosen,
                  "updated_at": utcnow()}}, upsert=True)
    return redirect(url_for("pages.dashboard", token=session.token, learner=learner) +
                    "#goals", code=303)


@bp.route("/learner/<learner>/submit", methods=["GET", "POST"])
@launched
def submit(session: LaunchSession, learner: str):
    """A learner submits evidence: a reflection with a link or a file. It becomes an xAPI
    statement in the LRS and waits in the teacher's review queue."""
    if session.learner != learner:
        abort(403)
    # Refuse a larger body before werkzeug spools it (the file limit plus the form).
    request.max_content_length = MAX_FILE_BYTES + 256 * 1024
    scope = scope_of(_course(session))
    rows = progress.learner_progress(get_db(), learner, scope.leaves, []).competencies
    form = request.form
    errors: list[str] = []
    if request.method == "POST":
        chosen = next((r for r in rows if r.identifier == form.get("competency")), None)
        title = (form.get("title") or "").strip()
        reflection = (form.get("reflection") or "").strip()
        link = (form.get("link") or "").strip() or None
        upload = request.files.get("file")
        level = form.get("level") or None
        source = form.get("source_type") or "self_reported"
        if chosen is None:
            errors.append("Choose the competency this evidence shows.")
        if not title:
            errors.append("Give your evidence a title.")
        if len(reflection) < 20:
            errors.append("Write a reflection of at least 20 characters: what did you do, "
                          "and what does it show?")
        if link and urlsplit(link).scheme not in ("http", "https"):
            errors.append("The link must start with http:// or https://.")
        if source not in SUBMISSION_SOURCES:
            errors.append("Choose where the evidence comes from.")
        if chosen is not None and level and level not in [lv.name for lv in chosen.levels]:
            errors.append("Choose a level from the competency's scale.")
        file_name = None
        if upload is not None and upload.filename:
            data = upload.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                errors.append("The file is larger than 5 MB; share a link instead.")
            file_name = upload.filename
        if not link and not file_name:
            errors.append("Add a link or a file that shows your work.")
        if not errors:
            statement = provider.submission_statement(
                session, competency=chosen.identifier, competency_label=chosen.label,
                title=title, reflection=reflection, link=link, level=level,
                source_type=source, file_name=file_name)
            if file_name:
                provider.attach_file(statement, learner=learner, course=session.context,
                                     name=file_name, data=data,
                                     content_type=upload.mimetype)
            try:
                provider.submit(statement)
            except provider.SubmissionError as exc:
                errors.append(f"Your evidence could not be saved: {exc}")
            else:
                return redirect(url_for("pages.dashboard", token=session.token,
                                        learner=learner, submitted="1"), code=303)
    return render_template("lti/submit.html", session=session, rows=rows, errors=errors,
                           form=form, sources=SUBMISSION_SOURCES,
                           selected=request.args.get("competency") or form.get("competency")), \
        (400 if errors else 200)


@bp.get("/mentees")
@launched
def mentees(session: LaunchSession):
    """A mentor's learners (from role_scope_mentor), each one click from their dashboard."""
    if "mentor" not in session.roles:
        abort(403)
    people = {p.identifier: p for p in Learner.objects(identifier__in=session.mentees or [])}
    if len(people) == 1:
        (only,) = people
        return redirect(url_for("pages.dashboard", token=session.token, learner=only))
    return render_template("lti/mentees.html", session=session,
                           people=[people[m] for m in session.mentees or [] if m in people])


@bp.post("/learner/<learner>/aliases")
@launched
def add_alias(session: LaunchSession, learner: str):
    """A teacher links another xAPI identifier to a learner of their course (e.g. the
    email an internship platform uses). Identifiers that already belong to another
    learner are refused: merging two records is an administrator's decision
    (`masteryhub learners link`), since the other record may belong to another course."""
    if not session.is_staff:
        abort(403)
    person = _learner_or_403(session, learner)
    kind = request.form.get("kind")
    if kind == "email":
        email = (request.form.get("email") or "").strip()
        agent = {"mbox": f"mailto:{email}"} if "@" in email and " " not in email else None
    else:  # accounts are not offered: one could be another platform's LMS user
        agent = None
    agent_ifi = ifi(agent) if agent else None
    if agent_ifi is None:
        return error_page("Give the email address another provider uses for this learner.",
                          400)
    owner = Learner.objects(agents=agent_ifi).only("identifier").first()
    if owner is not None and owner.identifier != person.identifier:
        return error_page("That identifier already belongs to another learner record. An "
                          "administrator can merge the two records.", 409)
    if owner is None:
        identity.link(person.identifier, agent_ifi)
    return redirect(url_for("pages.dashboard", token=session.token, learner=learner) +
                    "#identity", code=303)


@bp.get("/files/<file_id>")
@launched
def file(session: LaunchSession, file_id: str):
    """A file a learner submitted, for them, their teachers and their mentors."""
    stored = provider.stored_file(file_id)
    if stored is None:
        abort(404)
    if not access.can_view_learner(session, stored["learner"]):
        abort(403)
    if session.learner != stored["learner"] and session.is_staff and \
            stored.get("course") != session.context:
        abort(403)  # a teacher sees what was submitted in their course
    return provider.file_response(stored)
