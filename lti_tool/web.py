"""The LTI endpoints: JWKS, OIDC login, launch, and the session the pages run in.

A thin Flask adapter over ``lti_tool.launch``. Pages reached after a launch carry the
session token in their path (``/lti/s/<token>/...``): inside an LMS iframe a cookie set by
this tool is a third-party cookie that browsers increasingly drop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from lti_tool import keys
from lti_tool.launch import (
    CookiesBlocked,
    LaunchError,
    begin_login,
    complete_launch,
    confirm_storage_check,
    find_session,
)

bp = Blueprint("lti", __name__, url_prefix="/lti", template_folder="templates")

STATE_COOKIE = "lti1p3-state-"


def base_url() -> str:
    return current_app.extensions["masteryhub.settings"].base_url


def launch_url() -> str:
    return base_url() + "/lti/launch"


def _secure() -> bool:
    return base_url().startswith("https://")


def server_timing(blueprint: Blueprint, endpoints: tuple[str, ...] | None = None, *,
                  cpu: bool = False) -> None:
    """Add ``Server-Timing: app;dur=<ms>`` (and ``cpu;dur=`` with ``cpu``) to a blueprint's
    responses (only ``endpoints``, if given): for the benchmarks and for operators.
    ``app`` is the request's wall time in this process, database waits included; ``cpu``
    its own CPU time, which a busy machine does not inflate."""
    @blueprint.before_request
    def _start() -> None:
        if endpoints is None or request.endpoint in endpoints:
            g.timing_started = (time.perf_counter(), time.thread_time())

    @blueprint.after_request
    def _report(response: Response) -> Response:
        started = g.pop("timing_started", None)
        if started is not None:
            value = f"app;dur={(time.perf_counter() - started[0]) * 1000:.2f}"
            if cpu:
                value += f", cpu;dur={(time.thread_time() - started[1]) * 1000:.2f}"
            response.headers["Server-Timing"] = value
        return response


server_timing(bp, ("lti.login", "lti.launch"))


@bp.after_app_request
def _lti_headers(response: Response) -> Response:
    """Every page inside a launch (any blueprint): its path holds the session token, so
    no Referer leaves the site and nothing is cached."""
    if request.path.startswith("/lti/s/") or request.path.startswith("/lti/confirm/"):
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.after_request
def _headers(response: Response) -> Response:
    # Session tokens live in paths: never send them to other sites as a Referer.
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def error_page(message: str, status: int, **extra) -> tuple[str, int]:
    return render_template("lti/error.html", message=message, **extra), status


@bp.errorhandler(LaunchError)
def _launch_error(exc: LaunchError):
    current_app.logger.info("LTI refused: %s", exc.message)
    restart = None
    if isinstance(exc, CookiesBlocked) and exc.restart:
        restart = url_for("lti.login") + "?" + urlencode(exc.restart | {"new_window": "1"})
    return error_page(exc.message, exc.status, restart=restart)


@bp.get("/jwks")
def jwks():
    """The tool's public keys (active and recently rotated), for platforms to verify the
    client assertions and deep-linking responses we sign."""
    response = jsonify({"keys": keys.published()})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.route("/login", methods=["GET", "POST"])
def login():
    """OIDC third-party initiated login. Canvas uses GET, Moodle POSTs a form."""
    params = request.values.to_dict()
    login = begin_login(params, launch_url=launch_url())
    if login.storage_target:
        response = Response(render_template(
            "lti/storage_login.html", redirect_url=login.url, state=login.state,
            nonce=login.nonce, target=login.storage_target, origin=login.platform_origin))
    else:
        response = redirect(login.url, code=302)
    _set_state_cookie(response, login.state)
    return response


def _set_state_cookie(response: Response, state: str) -> None:
    kwargs = {"max_age": 600, "httponly": True, "path": "/lti/"}
    if _secure():
        # Sent on the platform's cross-site form POST; partitioned (CHIPS) so that it
        # survives third-party cookie blocking inside the LMS iframe.
        kwargs |= {"secure": True, "samesite": "None", "partitioned": True}
    else:
        kwargs["samesite"] = "Lax"
    response.set_cookie(STATE_COOKIE + state, "1", **kwargs)


@bp.post("/launch")
def launch():
    params = request.form.to_dict()
    state = params.get("state") or ""
    cookie_state = state if state and request.cookies.get(STATE_COOKIE + state) else None
    result = complete_launch(params, secure=_secure(), cookie_state=cookie_state)
    session = result.session
    if result.needs_storage_check:
        login = result.login
        platform_origin = _origin_of_platform(session.platform)
        return render_template(
            "lti/storage_launch.html", state=login.state, nonce=login.nonce,
            target=login.storage_target, origin=platform_origin,
            confirm_url=url_for("lti.confirm", token=session.token))
    response = redirect(landing_url(session), code=303)
    response.delete_cookie(STATE_COOKIE + state, path="/lti/")
    return response


def _origin_of_platform(identifier: str) -> str:
    from urllib.parse import urlsplit

    from lti_tool.models import Platform

    platform = Platform.objects(identifier=identifier).first()
    parts = urlsplit(platform.auth_login_url if platform else "")
    return f"{parts.scheme}://{parts.netloc}"


@bp.post("/confirm/<token>")
def confirm(token: str):
    """The launch page found our state and nonce in the platform's storage."""
    session = confirm_storage_check(token)
    if session is None:
        return error_page("This launch could not be confirmed (expired or already used). "
                          "Launch the tool again from your course.", 401)
    return redirect(landing_url(session), code=303)


def landing_url(session) -> str:
    """Where a launch lands: the deep-linking picker, or the view for the user's role."""
    views: dict[str, Callable] = current_app.extensions.setdefault("lti.landing", {})
    handler = views.get(session.message_type)
    if handler is not None:
        return handler(session)
    return base_url() + url_for("lti.home", token=session.token)


def launched(view):
    """Views inside a launch: the session token in the path, checked on every request."""
    @wraps(view)
    def wrapper(token: str, *args, **kwargs):
        session = find_session(token)
        if session is None:
            return error_page("Your session has expired or is not valid. Launch the tool "
                              "again from your course.", 401)
        g.lti_session = session
        return view(session, *args, **kwargs)
    return wrapper


@bp.get("/s/<token>/")
@launched
def home(session):
    """Where a launch lands: learners on their dashboard (or the placed view), mentors on
    their learners, staff on the class view."""
    from lti_tool.models import Course

    view, competency = request.args.get("view"), request.args.get("competency")
    if session.is_staff and session.context and "teacher.class_view" in \
            current_app.view_functions:
        return redirect(url_for("teacher.class_view", token=session.token,
                                **({"competency": competency} if competency else {})))
    if "mentor" in session.roles and not session.is_staff:
        return redirect(url_for("pages.mentees", token=session.token))
    if session.learner and not session.is_staff:
        if view == "competency" and competency:
            return redirect(url_for("pages.competency", token=session.token,
                                    learner=session.learner, competency=competency))
        return redirect(url_for("pages.dashboard", token=session.token,
                                learner=session.learner) + ("#credits-h" if view == "credit"
                                                            else ""))
    course = Course.objects(identifier=session.context).first() if session.context else None
    return render_template("lti/home.html", session=session, course=course)


@bp.get("/files/<file_id>")
def file_outside_a_launch(file_id: str):
    """The address xAPI attachments name (``fileUrl``): files stay behind the launch's
    access checks, so outside a launch this explains where to open them."""
    return error_page("This file belongs to a learner's submission. Open it from Mastery "
                      "Hub inside your course (the review queue or the learner's page).", 401)


@bp.get("/s/<token>/me")
@launched
def me(session):
    return jsonify({"user": session.user, "learner": session.learner, "name": session.name,
                    "roles": session.roles, "mentees": session.mentees,
                    "course": session.context, "platform": session.platform,
                    "deployment": session.deployment})
