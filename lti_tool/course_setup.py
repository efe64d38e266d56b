"""The instructor links their course to what it uses: frameworks, and optionally a subset
of competencies and credits (LTI custom parameters can preset the same; see courses.py).

After a change the course's gradebook is brought up to date: every member's mastery and
credit for the new scope is queued for the LMS grade sync.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from mongoengine.connection import get_db

from lti_tool import grades
from lti_tool.courses import CourseSetupError, link, scope_of, tree_order
from lti_tool.models import Course, LaunchSession
from lti_tool.web import error_page, launched
from mappings import catalog as catalog_module
from mappings.models import Competency, CreditRule, Framework, utcnow

bp = Blueprint("course_setup", __name__, url_prefix="/lti/s/<token>",
               template_folder="templates")


def _course_or_error(session: LaunchSession) -> Course:
    if not session.is_staff:
        abort(403)
    course = Course.objects(identifier=session.context).first() if session.context else None
    if course is None:
        abort(404)
    return course


@bp.errorhandler(403)
def _forbidden(_):
    return error_page("Only the course's teachers can change what it uses.", 403)


@bp.errorhandler(404)
def _no_course(_):
    return error_page("This launch is not from a course, so there is nothing to set up.", 404)


@bp.route("/course", methods=["GET", "POST"])
@launched
def setup(session: LaunchSession):
    course = _course_or_error(session)
    error = None
    if request.method == "POST":
        form = request.form
        try:
            link(course, frameworks=form.getlist("framework"),
                 competencies=form.getlist("competency"),
                 credit_rules=form.getlist("credit"))
        except CourseSetupError as exc:
            error = str(exc)
        else:
            grades.requeue_course(get_db(), course.identifier, utcnow(), catalog_module.load())
            return redirect(url_for("course_setup.setup", token=session.token, saved="1"),
                            code=303)
    frameworks = list(Framework.objects.order_by("title"))
    competencies = {f.identifier: tree_order(list(Competency.objects(framework=f.identifier)
                                                  .order_by("position")))
                    for f in frameworks}
    credits = {f.identifier: list(CreditRule.objects(framework=f.identifier).order_by("name"))
               for f in frameworks}
    return render_template("lti/course_setup.html", session=session, course=course,
                           frameworks=frameworks, competencies=competencies, credits=credits,
                           scope=scope_of(course), error=error,
                           saved=request.args.get("saved")), 400 if error else 200
